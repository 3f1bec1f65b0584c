"""Hooks a Producer into aiortc's RTCRtpReceiver, after RTX unwrap and before any decoder.

aiortc keeps doing what a publisher leg needs (SRTP, RTX unwrap, NACK generation, REMB,
receiver reports); the jitter buffer is replaced by a tap that hands each packet to the
producer and never assembles frames, so the receiver's decoder thread never gets work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCRtpReceiver
from aiortc.rtp import AnyRtcpPacket, RtcpSrPacket, RtpPacket

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
    """Route the receiver's packets and sender reports to ``producer``."""
    tap = PacketTap(producer)
    receiver._RTCRtpReceiver__jitter_buffer = tap  # type: ignore[attr-defined]
    original: Callable[[AnyRtcpPacket], Awaitable[None]] = receiver._handle_rtcp_packet

    async def handle_rtcp(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            producer.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
        await original(packet)

    receiver._handle_rtcp_packet = handle_rtcp  # type: ignore[method-assign]
    return tap


def keyframe_requester(receiver: RTCRtpReceiver) -> Callable[[int], None]:
    """A sync callback that sends a PLI for ``media_ssrc`` on the publisher leg."""

    def request(media_ssrc: int) -> None:
        spawn(receiver._send_rtcp_pli(media_ssrc))

    return request
