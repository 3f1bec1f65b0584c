"""A Producer is one track coming in from a publisher; it fans packets out to its sinks.

Per incoming packet it builds one canonical packet (our SSRC, the publisher's sequence number
and timestamp, no header extensions), stores it for NACKs and hands the same bytes to every
sink. Nothing here decodes media.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aiortc import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from sfu.codecs import keyframe_detector
from sfu.history import PacketHistory
from sfu.settings import FAST_START_MS, KEYFRAME_THROTTLE_MS

if TYPE_CHECKING:
    from sfu.consumer import Consumer

_HEADER = struct.Struct("!BBHII")
FAST_START_PACKETS = 256  # ~2.5 s of 600 kbps video; a longer replay waits for a keyframe
_keys = itertools.count(1)
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


def ntp_now() -> int:
    """Wall clock as a 64-bit NTP timestamp, as carried in RTCP sender reports."""
    now = time.time() + NTP_EPOCH_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))


class PacketSink(Protocol):
    """Anything a producer forwards to: a viewer's Consumer, a room's FLV muxer, a worker pipe.

    ``forward`` runs on the per-packet path: synchronous, no awaits, no tasks.
    """

    def forward(self, packet: bytes, keyframe: bool) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrackSlot:
    """A room's place for one publisher's track: its SSRC, and where sequence numbers and
    timestamps left off, so a publisher that takes the slot later continues them and viewers
    see one unbroken stream."""

    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    last_seq: int | None = None
    last_timestamp: int = 0
    left_at: float = 0.0


class Producer:
    """One published track and the sinks (viewer consumers, muxers) it forwards to."""

    def __init__(
        self,
        kind: str,
        codec: RTCRtpCodecParameters,
        *,
        publisher_id: str,
        request_keyframe: Callable[[int], None],
        keyframe_throttle_s: float = KEYFRAME_THROTTLE_MS / 1000,
        fast_start_s: float = FAST_START_MS / 1000,
        fast_start_packets: int = FAST_START_PACKETS,
        ssrc: int | None = None,
        key: int | None = None,
        mirror: bool = False,
        slot: TrackSlot | None = None,
        slot_index: int = 0,
        identity: str = "",
        layer: str = "high",
    ) -> None:
        self.kind = kind
        self.layer = layer  # "high", or "low" for a slot's second video (sfu/layers.py)
        self.low: Producer | None = None  # this slot's low video layer, when it has one
        self.identity = identity  # the publisher's: nobody receives their own tracks back
        self.codec = codec
        self.publisher_id = publisher_id
        self.key = next(_keys) if key is None else key
        self.slot = slot or TrackSlot(ssrc=random.getrandbits(32) if ssrc is None else ssrc)
        self.slot_index = slot_index
        self.ssrc = self.slot.ssrc
        self.last_seq = 0
        self._seq_offset = 0
        self._ts_offset = 0
        if codec.payloadType is None:
            raise ValueError("a negotiated codec has a payload type")
        self.payload_type: int = codec.payloadType
        self.history = PacketHistory(1024 if kind == "video" else 256)
        self.sinks: list[PacketSink] = []
        self.source_ssrc: int | None = None
        self.packets = 0
        self.octets = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.fast_starts = 0
        self.retransmits = 0
        self.last_timestamp = 0
        self.closed = False
        self.muted = False
        self._is_keyframe = keyframe_detector(codec.name)
        self._request_keyframe = request_keyframe
        self._keyframe_throttle_s = keyframe_throttle_s
        self._last_keyframe_request = -1e9
        self._sender_report: tuple[int, int] | None = None
        self._keyframe_pending = False
        self._deferred: asyncio.TimerHandle | None = None
        self._fast_start_s = fast_start_s
        self._fast_start_packets = fast_start_packets
        self._gop_seq: int | None = None  # the newest keyframe's first packet, for fast starts
        self._gop_ts = 0
        self._gop_at = 0.0
        # A mirror lives in a worker process: fed by relay(), its keyframe requests go to the
        # publisher's process, which knows the publisher's SSRC.
        self.mirror = mirror

    def ingest(self, packet: RtpPacket) -> None:
        """Forward one packet from the publisher (after RTX unwrap) to every consumer."""
        payload = packet.payload
        keyframe = self._is_keyframe(payload)
        padding = packet.padding_size
        first = 0xA0 if padding else 0x80
        if packet.ssrc != self.source_ssrc:
            self._new_source(packet)
        data = _HEADER.pack(
            first,
            (packet.marker << 7) | self.payload_type,
            (packet.sequence_number + self._seq_offset) & 0xFFFF,
            (packet.timestamp + self._ts_offset) & 0xFFFFFFFF,
            self.ssrc,
        ) + payload
        if padding:
            data += bytes(padding - 1) + bytes((padding,))
        self.relay(data, keyframe)

    def relay(self, data: bytes, keyframe: bool) -> None:
        """Store a canonical packet for NACKs and hand it to every sink.

        A worker process's mirror of a producer is fed here directly with the packets the
        publisher's process built, so both sides share one fan-out. A muted track goes
        nowhere, not even to the NACK history.
        """
        if self.muted:
            return
        self.last_seq = seq = (data[2] << 8) | data[3]
        self.history.put(seq, data)
        self.last_timestamp = ts = (data[4] << 24) | (data[5] << 16) | (data[6] << 8) | data[7]
        self.packets += 1
        self.octets += len(data) - 12
        if keyframe and self.kind == "video" and (ts != self._gop_ts or self._gop_seq is None):
            # a new keyframe picture (its SPS, PPS and IDR slices share one timestamp)
            self.keyframes += 1
            self._gop_seq, self._gop_ts, self._gop_at = seq, ts, time.monotonic()
        for sink in self.sinks:
            sink.forward(data, keyframe)

    def attach(self, sink: PacketSink) -> None:
        """Start forwarding to a sink; a new video sink waits for a keyframe, so ask for one."""
        self.sinks.append(sink)
        if self.kind == "video":
            self.request_keyframe()

    def attach_viewer(self, consumer: Consumer) -> None:
        """Start forwarding to a WebRTC viewer. Video starts at once from the newest keyframe
        and what followed it when that is recent (see ``recent_gop``); otherwise, or when
        the cached keyframe is older than the throttle interval, a keyframe is asked for."""
        self.sinks.append(consumer)
        if self.kind != "video":
            return
        gop = self.recent_gop()
        if gop is not None:
            consumer.fast_start(gop, self.codec.clockRate // 1000)
            self.fast_starts += 1
            if self._gop_within(self._keyframe_throttle_s):
                return
        self.request_keyframe()

    def expect_viewer(self) -> None:
        """A viewer is negotiating and will connect in a few hundred ms: unless a keyframe was
        cached within the throttle interval, ask for one now, so that it is there to start
        from when the viewer connects rather than asked for only then."""
        if (self.kind == "video" and self._fast_start_s > 0
                and not self._gop_within(self._keyframe_throttle_s)):
            self.request_keyframe()

    def recent_gop(self) -> list[bytes] | None:
        """The newest keyframe and every packet since, if it started within the fast-start
        window, is whole in the history and fits in ``fast_start_packets``; else None."""
        start = self._gop_seq
        if start is None or not self._gop_within(self._fast_start_s):
            return None
        count = ((self.last_seq - start) & 0xFFFF) + 1
        if count > self._fast_start_packets:
            return None
        packets = []
        for offset in range(count):
            packet = self.history.get((start + offset) & 0xFFFF)
            if packet is None:
                return None
            packets.append(packet)
        return packets

    @property
    def keyframe_seq(self) -> int | None:
        """The sequence number of the newest keyframe picture's first packet."""
        return self._gop_seq

    def _gop_within(self, seconds: float) -> bool:
        """The newest cached keyframe began at most ``seconds`` ago."""
        return time.monotonic() - self._gop_at <= seconds

    def detach(self, sink: PacketSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per throttle interval.

        A request inside the interval is deferred to its end, not dropped: the viewer that
        asked may have joined just after the last keyframe went by.
        """
        if self.kind != "video" or self.closed:
            return
        if self.source_ssrc is None and not self.mirror:
            self._keyframe_pending = True
            return
        wait = self._last_keyframe_request + self._keyframe_throttle_s - time.monotonic()
        if wait > 0 and not self.mirror:  # a mirror's requests meet the publisher's throttle
            if self._deferred is None:
                self._deferred = asyncio.get_running_loop().call_later(wait, self._send_deferred)
            return
        self._last_keyframe_request = time.monotonic()
        self.keyframe_requests += 1
        self._request_keyframe(self.source_ssrc or 0)

    def _send_deferred(self) -> None:
        self._deferred = None
        self.request_keyframe()

    def set_muted(self, muted: bool) -> None:
        """Stop or resume forwarding to every sink (WebRTC viewers, workers, FLV). Muting in the
        publisher's process stops the worker feeds too. On unmute viewers' decoders lost the
        muted stretch, so ask for a keyframe."""
        if self.muted and not muted:
            self.muted = False
            self.request_keyframe()
        self.muted = muted
        if self.low is not None:
            self.low.set_muted(muted)

    def _new_source(self, packet: RtpPacket) -> None:
        """First packet, or the publisher changed SSRC: continue the slot's sequence numbers and
        timestamps where they left off, and ask for the keyframe viewers wait on."""
        self.source_ssrc = packet.ssrc
        self._gop_seq = None  # a new source's packets do not follow the old keyframe
        slot = self.slot
        if self.packets:  # same publisher, new SSRC: continue from our own last packet
            slot.last_seq, slot.last_timestamp = self.last_seq, self.last_timestamp
            slot.left_at = time.monotonic()
        if slot.last_seq is not None:
            gap_s = max(time.monotonic() - slot.left_at, 0.001)
            self._seq_offset = (slot.last_seq + 1 - packet.sequence_number) & 0xFFFF
            self._ts_offset = (
                slot.last_timestamp + int(gap_s * self.codec.clockRate) - packet.timestamp
            ) & 0xFFFFFFFF
        slot.last_seq = None
        if self._keyframe_pending or self.sinks:
            self._keyframe_pending = False
            self._last_keyframe_request = -1e9
            self.request_keyframe()

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Keep the publisher's NTP/RTP mapping: viewers' sender reports repeat it (A/V sync)."""
        self._sender_report = (ntp_timestamp, (rtp_timestamp + self._ts_offset) & 0xFFFFFFFF)

    @property
    def has_sender_report(self) -> bool:
        """True once the publisher sent an RTCP sender report (its clock mapping is known)."""
        return self._sender_report is not None

    def sender_report(self) -> tuple[int, int]:
        """The (NTP, RTP) pair for viewers' reports; before the publisher's first SR, now/last."""
        if self._sender_report is not None:
            return self._sender_report
        return ntp_now(), self.last_timestamp

    def close(self) -> list[PacketSink]:
        """Stop forwarding; returns the consumers that were attached so their legs can react."""
        self.closed = True
        if self.packets and not self.mirror:  # the next publisher on this slot continues here
            self.slot.last_seq = self.last_seq
            self.slot.last_timestamp = self.last_timestamp
            self.slot.left_at = time.monotonic()
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        sinks, self.sinks = self.sinks, []
        self.history.clear()
        return sinks
