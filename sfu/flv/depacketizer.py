"""RTP payloads back into whole frames: H.264 access units (Annex-B) and VP8 frames.

FLV carries one frame per tag, so the per-room output reassembles the canonical packets it is
fed. This is payload-format framing (RFC 6184 packetization-mode 1, RFC 7741), not a codec:
nothing is decoded. A lost packet drops the frame being built and every frame after it until
the next keyframe (a decoder could not use them), and asks the publisher for that keyframe.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_FU_A = 28
START_CODE = b"\x00\x00\x00\x01"

_HEADER = struct.Struct("!BBHI")


@dataclass(frozen=True)
class RtpView:
    """The fields of a canonical packet that reassembly needs."""

    sequence: int
    timestamp: int
    marker: bool
    payload: bytes


def parse_rtp(packet: bytes) -> RtpView | None:
    """Header fields and payload (CSRCs, extension and padding removed); None if malformed."""
    if len(packet) < 12:
        return None
    first, second, sequence, timestamp = _HEADER.unpack_from(packet)
    if first >> 6 != 2:
        return None
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(packet) < start + 4:
            return None
        start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
    end = len(packet)
    if first & 0x20:
        end -= packet[-1]
    if end <= start:
        return None
    return RtpView(sequence, timestamp, bool(second & 0x80), packet[start:end])


@dataclass(frozen=True)
class Frame:
    """One reassembled frame: Annex-B NAL units for H.264, the raw frame for VP8."""

    timestamp: int
    data: bytes
    keyframe: bool
    sps: bytes = b""
    pps: bytes = b""


class _Reassembler:
    """Sequence tracking and frame boundaries shared by both payload formats."""

    def __init__(self, on_loss: Callable[[], None] | None = None) -> None:
        self._on_loss = on_loss
        self._next_seq: int | None = None
        self._timestamp: int | None = None
        self._broken = False  # the frame being built lost a packet
        self.need_keyframe = True  # nothing decodable until a keyframe
        self.lost = 0
        self.frames = 0

    def push(self, packet: bytes) -> list[Frame]:
        """Feed one canonical packet; returns the frames it completes (usually 0 or 1)."""
        rtp = parse_rtp(packet)
        if rtp is None:
            return []
        out: list[Frame] = []
        gap = self._next_seq is not None and rtp.sequence != self._next_seq
        if self._next_seq is not None and gap:
            if (rtp.sequence - self._next_seq) & 0xFFFF > 0x8000:
                return []  # late or duplicate (a retransmission we already passed)
            self.lost += (rtp.sequence - self._next_seq) & 0xFFFF
            self._loss()  # the frame in progress may have lost its tail
        self._next_seq = (rtp.sequence + 1) & 0xFFFF
        if self._timestamp is not None and rtp.timestamp != self._timestamp:
            out.extend(self._finish())  # marker bit missing: a new timestamp is a new frame
            if gap:
                self._broken = True  # ... and this one its head
        self._timestamp = rtp.timestamp
        if not self._broken:
            self._add(rtp.payload)
        if rtp.marker:
            out.extend(self._finish())
        return out

    def _loss(self) -> None:
        self._broken = True
        if not self.need_keyframe:
            self.need_keyframe = True
            if self._on_loss is not None:
                self._on_loss()

    def _finish(self) -> list[Frame]:
        timestamp, self._timestamp = self._timestamp, None
        broken, self._broken = self._broken, False
        frame = None if broken or timestamp is None else self._build(timestamp)
        self._reset()
        if frame is None:
            return []
        if self.need_keyframe and not frame.keyframe:
            return []
        self.need_keyframe = False
        self.frames += 1
        return [frame]

    def _add(self, payload: bytes) -> None:
        raise NotImplementedError

    def _build(self, timestamp: int) -> Frame | None:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError


class H264Depacketizer(_Reassembler):
    """RFC 6184 (single NAL, STAP-A, FU-A) to Annex-B access units, keeping SPS/PPS."""

    def __init__(self, on_loss: Callable[[], None] | None = None) -> None:
        super().__init__(on_loss)
        self._nals: list[bytes] = []
        self._fu: bytearray | None = None
        self.sps = b""
        self.pps = b""

    def _add(self, payload: bytes) -> None:
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            self._nals.append(payload)
        elif kind == NAL_STAP_A:
            pos = 1
            while pos + 2 <= len(payload):
                size = int.from_bytes(payload[pos : pos + 2], "big")
                pos += 2
                if size == 0 or pos + size > len(payload):
                    break
                self._nals.append(payload[pos : pos + size])
                pos += size
        elif kind == NAL_FU_A and len(payload) > 2:
            header = payload[1]
            if header & 0x80:  # start
                self._fu = bytearray(((payload[0] & 0xE0) | (header & 0x1F),))
            if self._fu is None:
                self._broken = True  # middle of a fragment whose start we never saw
                return
            self._fu += payload[2:]
            if header & 0x40:  # end
                self._nals.append(bytes(self._fu))
                self._fu = None

    def _build(self, timestamp: int) -> Frame | None:
        if self._fu is not None or not self._nals:
            return None
        keyframe = False
        nals = []
        for nal in self._nals:
            kind = nal[0] & 0x1F
            if kind == NAL_SPS:
                self.sps = nal
            elif kind == NAL_PPS:
                self.pps = nal
            elif kind == NAL_IDR:
                keyframe = True
            if kind != NAL_AUD:
                nals.append(nal)
        keyframe = keyframe and bool(self.sps and self.pps)
        data = b"".join(START_CODE + nal for nal in nals)
        return Frame(timestamp, data, keyframe, self.sps, self.pps)

    def _reset(self) -> None:
        self._nals = []
        self._fu = None


class Vp8Depacketizer(_Reassembler):
    """RFC 7741 payload descriptors stripped; partitions joined into one VP8 frame."""

    def __init__(self, on_loss: Callable[[], None] | None = None) -> None:
        super().__init__(on_loss)
        self._parts: list[bytes] = []

    def _add(self, payload: bytes) -> None:
        first = payload[0]
        pos = 1
        if first & 0x80 and len(payload) > 1:
            ext = payload[1]
            pos = 2
            if ext & 0x80:
                pos += 2 if pos < len(payload) and payload[pos] & 0x80 else 1
            if ext & 0x40:
                pos += 1
            if ext & 0x30:
                pos += 1
        start = bool(first & 0x10) and (first & 0x07) == 0
        if start:
            self._parts = []
        elif not self._parts:
            self._broken = True  # continuation of a frame whose start was lost
            return
        if pos < len(payload):
            self._parts.append(payload[pos:])

    def _build(self, timestamp: int) -> Frame | None:
        if not self._parts:
            return None
        data = b"".join(self._parts)
        return Frame(timestamp, data, keyframe=(data[0] & 0x01) == 0)

    def _reset(self) -> None:
        self._parts = []


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B buffer (3- or 4-byte start codes)."""
    nals: list[bytes] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        nal = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if nal:
            nals.append(nal)
        pos = nxt
    return nals
