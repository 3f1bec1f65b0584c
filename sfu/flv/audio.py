"""Opus to AAC for FLV, once per room (FLV players do not take Opus).

Runs on the room's codec thread (see worker.py): Opus decode, resample to 1024-sample stereo
float frames, the native ``aac`` encoder. About 0.5-0.8 ms of CPU per 20 ms packet. Times are
kept in 48 kHz samples on the room's timeline; the resampler follows input timestamps, so a
gap (lost packets) shows up as a gap in the AAC timestamps instead of a slow drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

SAMPLE_RATE = 48000
SAMPLES_PER_MS = SAMPLE_RATE // 1000
BITRATE = 96000
_TIME_BASE = Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True)
class OpusPacket:
    payload: bytes
    pts: int  # 48 kHz samples on the room timeline


@dataclass(frozen=True)
class AacPacket:
    data: bytes
    timestamp_ms: int


class OpusToAac:
    """Stateful transcoder; call ``process`` from one thread only."""

    def __init__(self, bitrate: int = BITRATE) -> None:
        self._decoder = av.CodecContext.create("opus", "r")
        self._decoder.sample_rate = SAMPLE_RATE
        self._decoder.layout = "stereo"
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

    def process(self, packet: OpusPacket) -> list[AacPacket]:
        out: list[AacPacket] = []
        raw = av.Packet(packet.payload)
        raw.pts = packet.pts
        raw.time_base = _TIME_BASE
        try:
            frames = self._decoder.decode(raw)
        except av.FFmpegError:
            return out  # a corrupt packet: skip it, the next one decodes
        for frame in frames:
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
