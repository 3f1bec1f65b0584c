"""Cheap RTP accounting for load-test viewers: count packets, loss and order without decoding.

A viewer's jitter buffers are swapped for counters so no frame reaches a decoder, which keeps
the load generator's own CPU per viewer small (SRTP + parse + NACK/RR, no codec).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket


@dataclass
class StreamCounter:
    """Per-stream RTP accounting after RTX unwrap: unique packets, unrecovered loss, order."""

    packets: int = 0  # every packet handed over, duplicates included
    bytes: int = 0
    frames: int = 0  # marker bits (video: completed frames)
    duplicates: int = 0
    late: int = 0  # arrived after a higher sequence number (reorder or NACK recovery)
    gaps: int = 0  # forward jumps in sequence number
    first_at: float | None = None
    first_keyframe_at: float | None = None
    starts_with_keyframe: bool | None = None
    _highest: int | None = None  # extended sequence number
    _first: int | None = None
    _recent: set[int] = field(default_factory=set)

    @property
    def expected(self) -> int:
        if self._first is None or self._highest is None:
            return 0
        return self._highest - self._first + 1

    @property
    def unique(self) -> int:
        return self.packets - self.duplicates

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.unique)

    def add(self, packet: RtpPacket, now: float, keyframe: bool | None) -> None:
        """Count a parsed packet (the decoding path, after RTX unwrap)."""
        if self.add_seq(packet.sequence_number, len(packet.payload), packet.marker, now):
            if self.starts_with_keyframe is None:
                self.starts_with_keyframe = keyframe
            if keyframe and self.first_keyframe_at is None:
                self.first_keyframe_at = now

    def add_seq(self, seq: int, size: int, marker: bool | int, now: float) -> bool:
        """Count one packet from its header fields alone; False for a duplicate.

        The one sequence-accounting routine: the decoding path calls it via `add`, the cheap
        raw-datagram path (loadtest.rawcount) calls it straight from the cleartext RTP header.
        """
        self.packets += 1
        self.bytes += size
        if self._highest is None or self._first is None:
            ext = self._highest = self._first = seq
            self.first_at = now
        else:
            ext = self._highest + ((seq - self._highest + 0x8000) & 0xFFFF) - 0x8000
            if ext > self._highest:
                if ext > self._highest + 1:
                    self.gaps += 1
                self._highest = ext
            elif ext in self._recent:
                self.duplicates += 1
                return False
            else:
                self.late += 1
                self._first = min(self._first, ext)
        self._recent.add(ext)
        if len(self._recent) > 4096:  # bounded memory: keep only a recent window
            floor = self._highest - 2048
            self._recent = {s for s in self._recent if s > floor}
        if marker:
            self.frames += 1
        return True

    def snapshot(self) -> tuple[int, int, int]:
        """(packets, unique, expected): window deltas of these give rate and loss."""
        return self.packets, self.unique, self.expected


def h264_keyframe(payload: bytes) -> bool:
    """Does this H.264 RTP payload carry (the start of) an IDR or SPS? Single NAL, STAP-A, FU-A."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 28 and len(payload) > 1:
        return bool(payload[1] & 0x80) and (payload[1] & 0x1F) in (5, 7)
    if nal == 24:
        pos = 1
        for _ in range(64):  # bounded walk over aggregated NALs
            if pos + 2 >= len(payload):
                break
            size = payload[pos] << 8 | payload[pos + 1]
            if payload[pos + 2] & 0x1F in (5, 7):
                return True
            pos += 2 + size
    return False


class CountingJitterBuffer(JitterBuffer):
    """Counts each packet after RTX unwrap; passes through to a real buffer only if `decode`."""

    def __init__(self, kind: str, decode: bool) -> None:
        if kind == "audio":
            super().__init__(capacity=16, prefetch=4)
        else:
            super().__init__(capacity=512, is_video=True)
        self.kind = kind
        self.decode = decode
        self.stream = StreamCounter()
        self.h264_payload_types: set[int] = set()

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        key = None
        if self.kind == "video" and self.stream.first_keyframe_at is None:
            key = packet.payload_type in self.h264_payload_types and h264_keyframe(packet.payload)
        self.stream.add(packet, time.monotonic(), key)
        if self.decode:
            return super().add(packet)
        return False, None


def install_counter(receiver: RTCRtpReceiver, kind: str, decode: bool) -> CountingJitterBuffer:
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):  # private API of aiortc 1.16
        raise RuntimeError("this aiortc has no RTCRtpReceiver.__jitter_buffer to count packets")
    buffer = CountingJitterBuffer(kind, decode)
    receiver._RTCRtpReceiver__jitter_buffer = buffer
    return buffer
