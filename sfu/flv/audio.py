"""Opus to AAC for FLV, once per room (FLV players do not take Opus), mixing in co-hosts.

Runs on the room's codec thread (see worker.py): Opus decode, resample to 1024-sample stereo
float frames, the native ``aac`` encoder. About 0.5-0.8 ms of CPU per 20 ms packet. Times are
kept in 48 kHz samples on the room's timeline; the resampler follows input timestamps, so a
gap (lost packets) shows up as a gap in the AAC timestamps instead of a slow drift.

With co-hosts, their packets are decoded too and queued as samples; each anchor packet takes as
many samples from every co-host queue (silence when one runs dry), sums them with its own and
clips: the anchor's audio clock drives the mix, as its video drives the picture. A queue keeps
at most ``MAX_QUEUE_MS`` (older samples go), so a co-host whose clock runs fast adds no delay.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

SAMPLE_RATE = 48000
SAMPLES_PER_MS = SAMPLE_RATE // 1000
BITRATE = 96000
_TIME_BASE = Fraction(1, SAMPLE_RATE)
MAX_QUEUE_MS = 200


@dataclass(frozen=True)
class OpusPacket:
    payload: bytes
    pts: int  # 48 kHz samples on the room timeline (the anchor's; unused for co-hosts)
    slot: int = 0  # 0: the anchor, whose packets drive the output; 1..: co-hosts, mixed in


@dataclass(frozen=True)
class AacPacket:
    data: bytes
    timestamp_ms: int


class OpusToAac:
    """Stateful transcoder and mixer; call ``process`` from one thread only."""

    def __init__(self, bitrate: int = BITRATE) -> None:
        self._decoders: dict[int, av.AudioCodecContext] = {}
        self._packed: dict[int, av.AudioResampler] = {}  # per slot: interleaved stereo floats
        self._queues: dict[int, np.ndarray] = {}  # co-host slot -> interleaved stereo floats
        self._resampler = av.AudioResampler(
            format="fltp", layout="stereo", rate=SAMPLE_RATE, frame_size=1024
        )
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "stereo"
        encoder.format = "fltp"
        encoder.time_base = _TIME_BASE
        encoder.bit_rate = bitrate
        encoder.open()
        self._encoder = encoder
        self._last_ms = -1
        self.mix_cpu_s = 0.0  # thread CPU spent on co-hosts (decode + mix)
        self.active: frozenset[int] = frozenset({0})  # slots mixed in (set by the output)

    def _decode(self, packet: OpusPacket) -> list[av.AudioFrame]:
        decoder = self._decoders.get(packet.slot)
        if decoder is None:
            created = av.CodecContext.create("opus", "r")
            assert isinstance(created, av.AudioCodecContext)
            decoder = self._decoders[packet.slot] = created
            decoder.sample_rate = SAMPLE_RATE
            decoder.layout = "stereo"
        raw = av.Packet(packet.payload)
        raw.pts = packet.pts
        raw.time_base = _TIME_BASE
        try:
            return [f for f in decoder.decode(raw) if isinstance(f, av.AudioFrame)]
        except av.FFmpegError:
            return []  # a corrupt packet: skip it, the next one decodes

    def process(self, packet: OpusPacket) -> list[AacPacket]:
        if packet.slot != 0:
            if packet.slot in self.active:
                started = time.thread_time()
                for frame in self._decode(packet):
                    self._queue(packet.slot, frame)
                self.mix_cpu_s += time.thread_time() - started
            return []
        for slot in [s for s in self._queues if s not in self.active]:
            self.forget(slot)  # a co-host that left: here, on the codec thread
        out: list[AacPacket] = []
        for decoded in self._decode(packet):
            for frame in self._pack(0, decoded):
                if self._queues:
                    started = time.thread_time()
                    frame = self._mix(frame)
                    self.mix_cpu_s += time.thread_time() - started
                out += self._encode(frame)
        return out

    def _encode(self, frame: av.AudioFrame) -> list[AacPacket]:
        out: list[AacPacket] = []
        for chunk in self._resampler.resample(frame):
            for encoded in self._encoder.encode(chunk):
                if encoded.pts is None:
                    continue
                ms = max(0, int(encoded.pts) // SAMPLES_PER_MS)
                if ms <= self._last_ms:
                    ms = self._last_ms + 1
                self._last_ms = ms
                out.append(AacPacket(bytes(encoded), ms))
        return out

    def _pack(self, slot: int, frame: av.AudioFrame) -> list[av.AudioFrame]:
        """Every slot's audio as interleaved stereo floats (one format into the AAC path,
        mixed or not, so switching the mix on and off never resets the encoder)."""
        packer = self._packed.get(slot)
        if packer is None:
            packer = self._packed[slot] = av.AudioResampler(format="flt", layout="stereo",
                                                            rate=SAMPLE_RATE)
        return list(packer.resample(frame))

    def _queue(self, slot: int, frame: av.AudioFrame) -> None:
        parts = [f.to_ndarray().reshape(-1) for f in self._pack(slot, frame)]
        samples = np.concatenate([self._queues.get(slot, np.zeros(0, np.float32)), *parts])
        limit = 2 * MAX_QUEUE_MS * SAMPLES_PER_MS
        self._queues[slot] = samples[-limit:]

    def _mix(self, frame: av.AudioFrame) -> av.AudioFrame:
        mixed = frame.to_ndarray().reshape(-1).astype(np.float32, copy=True)
        for slot, queue in self._queues.items():
            take = queue[: len(mixed)]
            mixed[: len(take)] += take
            self._queues[slot] = queue[len(take):]
        np.clip(mixed, -1.0, 1.0, out=mixed)
        out = av.AudioFrame.from_ndarray(mixed.reshape(1, -1), format="flt", layout="stereo")
        out.sample_rate = SAMPLE_RATE
        out.pts = frame.pts
        out.time_base = _TIME_BASE
        return out

    def forget(self, slot: int) -> None:
        """A co-host left: its queue and decoder go (call on the codec thread)."""
        self._queues.pop(slot, None)
        self._decoders.pop(slot, None)
        self._packed.pop(slot, None)
