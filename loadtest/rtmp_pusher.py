"""An RTMP anchor made with PyAV: the painted clock (loadtest.media) encoded as an encoder would.

libx264 High profile, ``tune=zerolatency``, no B-frames, a fixed GOP (1 s at 30 fps), a rate
capped by VBV; optionally AAC (a tone); muxed to FLV and pushed to ``rtmp://...`` in real time.
Each frame is painted with the wall-clock time just before it is encoded, so a viewer in the
same process reads glass-to-glass latency off the picture with the same clock.

Encoding and the (blocking) network writes run in one thread of their own: the load generator's
event loop, which decodes viewers meanwhile, never waits on them. x264 and the FLV muxer release
the GIL while they work.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from loadtest.media import AUDIO_RATE, FPS, HEIGHT, WIDTH, Painter, now_ms

AAC_SAMPLES = 1024  # samples per AAC frame
# Audio is encoded this far ahead of the video frame being sent: the muxer interleaves by
# timestamp and would hold a video packet until an audio packet at least as late is there
# (AAC's encoder delay is 1024 samples), which would add up to a frame interval to the video.
AUDIO_LEAD_S = 0.1
MAX_PUSH_S = 3600.0
JOIN_TIMEOUT_S = 10.0
MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class PushConfig:
    """What the pusher sends; the defaults are the issue's anchor (1.2 Mbit/s + 128 kbit/s)."""

    url: str
    video_bitrate: int = 1_200_000
    audio_bitrate: int = 128_000  # 0: video only
    audio_channels: int = 2  # OBS sends stereo
    fps: int = FPS
    gop: int = FPS  # frames between keyframes: 1 s at 30 fps
    preset: str = "veryfast"
    seconds: float = MAX_PUSH_S
    colour: str | None = None


def x264_params(cfg: PushConfig) -> str:
    """OBS-like x264 settings for a live anchor: fixed GOP, no B-frames, rate capped by a
    one-second VBV (so a noisy picture costs what the anchor's uplink would carry)."""
    kbps = cfg.video_bitrate // 1000
    return (f"keyint={cfg.gop}:min-keyint={cfg.gop}:scenecut=0:bframes=0"
            f":vbv-maxrate={kbps}:vbv-bufsize={kbps}")


def tone(frequency: int = 440, amplitude: float = 0.2) -> np.ndarray:
    """One second of a mono sine plus one AAC frame, float32 (AAC's encoder takes planar
    float): an integer frequency repeats every second, so frame k is a slice at k*1024 % rate."""
    n = np.arange(AUDIO_RATE + AAC_SAMPLES)
    return (amplitude * np.sin(2 * np.pi * frequency * n / AUDIO_RATE)).astype(np.float32)


class RtmpPusher:
    """One RTMP publish from a thread; `start`, then `stop`. Counters are read by the loop."""

    def __init__(self, cfg: PushConfig) -> None:
        self.cfg = cfg
        self.frames = 0  # video frames muxed
        self.audio_frames = 0
        self.bytes = 0  # encoded payload bytes (video + audio)
        self.keyframes = 0
        self.skipped_frames = 0  # capture slots skipped because encoding fell behind
        self.first_write_at: float | None = None  # monotonic
        self.sent_ms: list[tuple[float, int]] = []  # (monotonic, ms from paint to sent)
        self.error: str | None = None
        self.thread_cpu_s = 0.0  # this thread's CPU (x264's own threads not included)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtmp-pusher", daemon=True)
        self._thread.start()

    async def wait_started(self, seconds: float = 10.0) -> bool:
        """True once a video frame went out (the publish was accepted far enough to write)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.error is None:
            if self.frames > 0:
                return True
            await asyncio.sleep(0.05)
        return self.frames > 0 and self.error is None

    async def stop(self) -> None:
        """Ask the thread to end the stream (trailer, close) and wait for it, bounded."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, thread.join, JOIN_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        return {"frames": self.frames, "audio_frames": self.audio_frames, "bytes": self.bytes,
                "keyframes": self.keyframes, "skipped_frames": self.skipped_frames,
                "thread_cpu_s": round(self.thread_cpu_s, 3), "error": self.error,
                "video_bitrate": self.cfg.video_bitrate, "audio_bitrate": self.cfg.audio_bitrate,
                "audio_channels": self.cfg.audio_channels}

    def _run(self) -> None:
        try:
            self._push()
        except Exception as exc:  # reported to the scenario, which decides what it means
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.thread_cpu_s = time.thread_time()

    def _open(self) -> tuple[Any, Any, Any]:
        cfg = self.cfg
        out: Any = av.open(cfg.url, "w", format="flv",
                           options={"flvflags": "no_duration_filesize"},
                           container_options={"flush_packets": "1"}, timeout=10.0)
        video: Any = out.add_stream("libx264", rate=cfg.fps)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = cfg.video_bitrate
        video.gop_size = cfg.gop
        video.codec_context.max_b_frames = 0
        video.codec_context.time_base = fractions.Fraction(1, cfg.fps)
        video.profile = "High"
        video.options = {"preset": cfg.preset, "tune": "zerolatency", "profile": "high",
                         "forced-idr": "1", "x264-params": x264_params(cfg)}
        audio: Any = None
        if cfg.audio_bitrate:
            layout = "stereo" if cfg.audio_channels == 2 else "mono"
            audio = out.add_stream("aac", rate=AUDIO_RATE, layout=layout)
            audio.bit_rate = cfg.audio_bitrate
        return out, video, audio

    def _push(self) -> None:
        cfg = self.cfg
        out, video, audio = self._open()
        painter = Painter(cfg.colour)
        wave = tone()
        samples = 0
        period = 1.0 / cfg.fps
        last_gop = -1
        t0 = time.monotonic()
        slot = 0  # the capture slot (frame number at the nominal rate) of the next frame
        try:
            while slot < cfg.seconds * cfg.fps and not self._stop.is_set():
                wait = t0 + slot * period - time.monotonic()
                if wait > 0:
                    self._stop.wait(wait)
                elif -wait >= period:  # encoding lag: skip to the current slot, as OBS does
                    behind = int(-wait / period)
                    self.skipped_frames += behind
                    slot += behind
                while audio is not None and samples < (slot * period + AUDIO_LEAD_S) * AUDIO_RATE:
                    self._audio(out, audio, wave, samples)
                    samples += AAC_SAMPLES
                capture = now_ms()
                frame = painter.paint(slot, capture)
                frame.pts = slot
                frame.time_base = fractions.Fraction(1, cfg.fps)
                if slot // cfg.gop != last_gop:  # keyframes on the clock, skipped frames or not
                    frame.pict_type = av.video.frame.PictureType.I
                    last_gop = slot // cfg.gop
                for packet in video.encode(frame):
                    self.keyframes += int(packet.is_keyframe)
                    self._mux(out, packet)
                if len(self.sent_ms) < MAX_SAMPLES:  # paint + encode + mux + TCP send
                    self.sent_ms.append((time.monotonic(), now_ms() - capture))
                self.frames += 1
                slot += 1
        finally:
            try:
                for stream in filter(None, (video, audio)):
                    for packet in stream.encode(None):
                        out.mux(packet)
            finally:
                out.close()

    def _audio(self, out: Any, stream: Any, wave: np.ndarray, samples: int) -> None:
        offset = samples % AUDIO_RATE
        channels = self.cfg.audio_channels
        chunk = np.tile(wave[offset : offset + AAC_SAMPLES], (channels, 1))
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp",
                                           layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = samples
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            self._mux(out, packet)
        self.audio_frames += 1

    def _mux(self, out: Any, packet: Any) -> None:
        self.bytes += packet.size
        out.mux(packet)
        if self.first_write_at is None:
            self.first_write_at = time.monotonic()
