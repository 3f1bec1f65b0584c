"""A viewer's RTCP sender reports: one compound packet per viewer per node tick.

aiortc runs a task per RTCRtpSender that wakes every 0.5-1.5 s and sends SR + SDES through the
async ICE path. A viewer has a sender per negotiated section (a video and an audio per publisher
slot), most slots carry nothing for long stretches, and every wake-up costs the node per viewer,
not per packet. So once a viewer is connected its senders' loops go quiet, and the node's
one-second tick sends instead one SR per forwarding consumer plus one SDES (CNAME), protected
once and sent on the viewer's connected socket. The SRs carry the publisher's NTP/RTP mapping
(lip sync in the browser) and what this viewer was sent; each sender's LSR is kept so aiortc
still estimates the round-trip time from the viewer's receiver reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from sfu.aiortc_private import set_last_sender_report

if TYPE_CHECKING:
    from sfu.consumer import Consumer

SDES_CNAME = 1
_MASK = 0xFFFFFFFF


def compound_report(consumers: Iterable[Consumer], cname: bytes) -> bytes:
    """SR for every consumer that has sent something, then one SDES; b"" if none has."""
    reports: list[bytes] = []
    chunks: list[RtcpSourceInfo] = []
    now = time.time()
    for consumer in consumers:
        if not consumer.packets:
            continue
        ntp, rtp = consumer.sender_report()
        ssrc = consumer.producer.ssrc
        reports.append(bytes(RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp,
            packet_count=consumer.packets & _MASK, octet_count=consumer.octets & _MASK,
        ))))
        chunks.append(RtcpSourceInfo(ssrc=ssrc, items=[(SDES_CNAME, cname)]))
        if consumer.sender is not None:  # aiortc's RTT estimate matches RRs against these
            set_last_sender_report(consumer.sender, (ntp >> 16) & _MASK, now)
    if not reports:
        return b""
    return b"".join(reports) + bytes(RtcpSdesPacket(chunks=chunks))


class SenderReports:
    """Sends a viewer's compound reports: protect as RTCP with its SRTP session, then send."""

    def __init__(self, protect_rtcp: Callable[[bytes], bytes], send: Callable[[bytes], object],
                 cname: str) -> None:
        self._protect = protect_rtcp
        self._send = send
        self._cname = bytes(cname, "utf-8")
        self.sent = 0

    def send(self, consumers: Iterable[Consumer]) -> None:
        data = compound_report(consumers, self._cname)
        if not data:
            return
        try:
            self._send(self._protect(data))
        except Exception:  # a closing transport: the leg is going away anyway
            return
        self.sent += 1
