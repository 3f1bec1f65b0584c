"""Hooks a Producer into aiortc's RTCRtpReceiver, after RTX unwrap and before any decoder.

aiortc keeps doing what a publisher leg needs (SRTP, RTX unwrap, NACK generation, REMB,
receiver reports); the jitter buffer is replaced by a tap that hands each packet to the
producer and never assembles frames, so the receiver's decoder thread never gets work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiortc import RTCRtpReceiver
from aiortc.rtp import AnyRtcpPacket, RtcpSrPacket, RtpPacket

from sfu.aiortc_private import jitter_buffer_tap, observe_receiver_rtcp, pli_sender
from sfu.background import spawn
from sfu.producer import Producer

logger = logging.getLogger("shopcast.sfu.receiver")


class PacketTap:
    """Stands in for aiortc's JitterBuffer: ``add`` forwards and reports no frame."""

    __slots__ = ("dropped", "producer")

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.dropped = 0

    def add(self, packet: RtpPacket) -> tuple[bool, None]:
        if packet.payload_type == self.producer.payload_type:
            self.producer.ingest(packet)
        else:
            self.dropped += 1
        return False, None


def tap_receiver(receiver: RTCRtpReceiver, producer: Producer) -> PacketTap:
    """Route the receiver's packets and sender reports to ``producer`` (raises
    ``AiortcIncompatible`` rather than tap nothing)."""
    tap = PacketTap(producer)
    jitter_buffer_tap(receiver, tap)

    def on_rtcp(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)

    observe_receiver_rtcp(receiver, on_rtcp)
    return tap


def keyframe_requester(receiver: RTCRtpReceiver) -> Callable[[int], None]:
    """A sync callback that sends a PLI for ``media_ssrc`` on the publisher leg."""
    send_pli = pli_sender(receiver)

    def request(media_ssrc: int) -> None:
        spawn(send_pli(media_ssrc))

    return request
