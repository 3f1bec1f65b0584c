"""AAC from an RTMP encoder into Opus for WebRTC viewers, once per room.

Browsers' WebRTC stacks do not take AAC, so the room's audio is transcoded once (never per
viewer): AAC decode (the AudioSpecificConfig from the sequence header as extradata), resample
to 48 kHz stereo in 960-sample frames, libopus at 20 ms and about 64 kbit/s in its low-delay
mode. Roughly half a millisecond of CPU per 20 ms packet; ``cpu_s`` adds it up for /metrics.

Timestamps are RTP timestamps on the 48 kHz clock: the first FLV timestamp is 0, every packet
is 960 after the one before, and when the encoder's timestamps jump ahead of the samples it
sent (a gap of more than ``GAP_MS``) the clock jumps with them, so audio stays in step with the
video clock of the same FLV stream. It never steps backwards. A packet that does not decode is
counted in ``errors`` and skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import av

from sfu.errors import MalformedMedia

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms
BITRATE = 64000
GAP_MS = 100  # input timestamps this far ahead of the samples seen: a real gap
_TIME_BASE = Fraction(1, SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class OpusPayload:
    """One 20 ms Opus packet and its RTP timestamp (48 kHz, first input timestamp = 0)."""

    payload: bytes
    timestamp: int


class AacToOpus:
    """One room's AAC -> Opus transcoder; call from one thread at a time."""

    def __init__(self, audio_specific_config: bytes, bitrate: int = BITRATE) -> None:
        self._decoder = self._open_decoder(audio_specific_config)
        self._config = bytes(audio_specific_config)
        self._resampler = self._new_resampler()
        encoder = av.CodecContext.create("libopus", "w")
        assert isinstance(encoder, av.AudioCodecContext)
        encoder.sample_rate = SAMPLE_RATE
        encoder.layout = "stereo"
        encoder.format = "s16"
        encoder.time_base = _TIME_BASE
        encoder.bit_rate = bitrate
        encoder.options = {"application": "lowdelay", "frame_duration": "20"}
        encoder.open()
        self._encoder = encoder
        self.origin_ms: int | None = None  # the FLV timestamp that maps to RTP timestamp 0
        self._input_samples = 0.0  # decoded samples so far, counted at 48 kHz
        self._skipped = 0  # 48 kHz samples the clock jumped over at gaps
        self._frames_in = 0  # resampled frames given to the encoder
        self._packets = 0
        self.errors = 0  # AAC packets that failed to decode (skipped)
        self.cpu_s = 0.0  # thread CPU time spent in push

    @staticmethod
    def _open_decoder(config: bytes) -> av.AudioCodecContext:
        if len(config) < 2:
            raise MalformedMedia(f"AAC AudioSpecificConfig of {len(config)} bytes is too short")
        decoder = av.CodecContext.create("aac", "r")
        assert isinstance(decoder, av.AudioCodecContext)
        decoder.extradata = bytes(config)
        try:
            decoder.open()
        except (av.FFmpegError, ValueError) as exc:
            raise MalformedMedia(f"AAC AudioSpecificConfig is not usable: {exc}") from exc
        return decoder

    @staticmethod
    def _new_resampler() -> av.AudioResampler:
        return av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE,
                                 frame_size=FRAME_SAMPLES)

    def set_config(self, audio_specific_config: bytes) -> None:
        """A new sequence header (encoders repeat it; a changed one restarts the decoder and
        resampler while the Opus encoder and the timeline go on)."""
        if bytes(audio_specific_config) == self._config:
            return
        self._decoder = self._open_decoder(audio_specific_config)
        self._config = bytes(audio_specific_config)
        self._resampler = self._new_resampler()

    def push(self, timestamp_ms: int, raw_aac: bytes) -> list[OpusPayload]:
        """One raw AAC frame (an FLV AAC tag's payload) in, zero or more Opus packets out."""
        started = time.thread_time()
        try:
            return self._push(timestamp_ms, raw_aac)
        finally:
            self.cpu_s += time.thread_time() - started

    def _push(self, timestamp_ms: int, raw_aac: bytes) -> list[OpusPayload]:
        if not raw_aac:
            return []
        try:
            frames = self._decoder.decode(av.Packet(raw_aac))
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return []
        out: list[OpusPayload] = []
        for frame in frames:
            if not isinstance(frame, av.AudioFrame) or frame.samples == 0:
                continue
            self._follow_clock(timestamp_ms)
            self._input_samples += frame.samples * SAMPLE_RATE / frame.sample_rate
            try:
                resampled = self._resampler.resample(frame)
            except ValueError:
                # the stream changed format without a new sequence header: start over
                self._resampler = self._new_resampler()
                resampled = self._resampler.resample(frame)
            for chunk in resampled:
                chunk.pts = self._frames_in * FRAME_SAMPLES
                chunk.time_base = _TIME_BASE
                self._frames_in += 1
                for packet in self._encoder.encode(chunk):
                    out.append(self._stamp(bytes(packet)))
        return out

    def _follow_clock(self, timestamp_ms: int) -> None:
        """Jump the clock ahead when the input timestamps run ahead of the samples by a gap."""
        if self.origin_ms is None:
            self.origin_ms = timestamp_ms
            return
        expected = self._input_samples + self._skipped
        actual = (timestamp_ms - self.origin_ms) * (SAMPLE_RATE // 1000)
        if actual - expected > GAP_MS * (SAMPLE_RATE // 1000):
            self._skipped += round(actual - expected)

    def _stamp(self, payload: bytes) -> OpusPayload:
        # packet count and skipped samples only grow: 960 apart, or more across a gap
        timestamp = self._packets * FRAME_SAMPLES + self._skipped
        self._packets += 1
        return OpusPayload(payload, timestamp)
