"""Synthetic media whose content survives H.264 and can be read back at a viewer.

The video carries a strip of large black/white luma blocks at the top of each frame encoding the
wall-clock capture time (ms, mod 2**40) and a frame counter, so a viewer on the same machine can
compute glass-to-glass latency from the decoded picture alone, without any side channel. The rest
of the frame is a flat background colour (hue cycling with the frame number, or a fixed colour) so
tests can tell two publishers apart after compression.
"""

from __future__ import annotations

import asyncio
import colorsys
import fractions
import functools
import time
import zlib
from typing import Any

import av
import numpy as np
from aiortc import AudioStreamTrack, RTCRtpSender, VideoStreamTrack
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError

WIDTH = 640
HEIGHT = 360
FPS = 30
VIDEO_CLOCK = 90_000

# Strip geometry at 640x360: 2 rows x 32 blocks of 20x32 px = 64 bits in the top 64 rows.
BLOCK_W = 20
BLOCK_H = 32
COLS = 32
ROWS = 2
STRIP_H = BLOCK_H * ROWS
TIME_BITS = 40
FRAME_BITS = 16
CHECK_BITS = 8
TIME_MOD = 1 << TIME_BITS
FRAME_MOD = 1 << FRAME_BITS
BLACK = 16
WHITE = 235
# A decoded block whose mean luma falls between these is neither black nor white: no strip.
_LOW, _HIGH = 70, 180
# Sample each block's centre only; H.264 blurs and rings at block edges.
_MARGIN_X, _MARGIN_Y = 4, 6

HUES = 120  # background hue steps in one cycle
# Flat colour compresses to ~100 kbps; moving 4x4-pixel luma noise makes the encoder spend its
# whole budget, so the stream has the packet rate of real video at the configured bitrate.
NOISE_FRAMES = 16
NOISE_CELL = 4
NOISE_AMPLITUDE = 24
HUE_STEP_FRAMES = 3  # frames per hue step: a 12 s colour cycle at 30 fps

NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "yellow": (220, 220, 20),
    "magenta": (220, 20, 220),
    "cyan": (20, 200, 220),
}

AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms


def rgb_to_yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range, the same matrix `yuv_to_rgb` inverts (what we paint we read back)."""
    r, g, b = (c / 255.0 for c in rgb)
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return tuple(round(min(255.0, max(0.0, c))) for c in (y, u, v))  # type: ignore[return-value]


def yuv_to_rgb(y: float, u: float, v: float) -> tuple[int, int, int]:
    """Inverse of `rgb_to_yuv`, clamped to 0..255."""
    c, d, e = y - 16, u - 128, v - 128
    r = 1.164 * c + 1.596 * e
    g = 1.164 * c - 0.392 * d - 0.813 * e
    b = 1.164 * c + 2.017 * d
    return tuple(round(min(255.0, max(0.0, x))) for x in (r, g, b))  # type: ignore[return-value]


def _checksum(capture_ms: int, frame_no: int) -> int:
    payload = ((capture_ms % TIME_MOD) << FRAME_BITS | (frame_no % FRAME_MOD)).to_bytes(7, "big")
    return zlib.crc32(payload) & 0xFF


def encode_bits(capture_ms: int, frame_no: int) -> np.ndarray:
    """The 64 strip bits, most significant first: time (40), frame number (16), CRC-8ish (8)."""
    word = (capture_ms % TIME_MOD) << (FRAME_BITS + CHECK_BITS)
    word |= (frame_no % FRAME_MOD) << CHECK_BITS
    word |= _checksum(capture_ms, frame_no)
    return np.array([(word >> (63 - i)) & 1 for i in range(64)], dtype=np.uint8)


def decode_bits(bits: np.ndarray) -> tuple[int, int] | None:
    """(capture_ms, frame_no) from 64 bits, or None when the checksum does not match."""
    word = 0
    for bit in bits.tolist():
        word = (word << 1) | int(bit)
    check = word & 0xFF
    frame_no = (word >> CHECK_BITS) & (FRAME_MOD - 1)
    capture_ms = word >> (FRAME_BITS + CHECK_BITS)
    if _checksum(capture_ms, frame_no) != check:
        return None
    return capture_ms, frame_no


class Painter:
    """Builds 640x360 yuv420p frames from one reused numpy buffer (cheap enough for 30 fps)."""

    def __init__(
        self, colour: tuple[int, int, int] | str | None = None, texture: bool = True
    ) -> None:
        if isinstance(colour, str):
            colour = NAMED_COLOURS[colour]
        if colour is None:
            rgbs = [
                tuple(int(c * 255) for c in colorsys.hsv_to_rgb(i / HUES, 0.75, 0.8))
                for i in range(HUES)
            ]
        else:
            rgbs = [colour]
        self._yuv = [rgb_to_yuv(rgb) for rgb in rgbs]  # type: ignore[arg-type]
        self._buf = np.zeros((HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
        self._y = self._buf[:HEIGHT]
        chroma = self._buf[HEIGHT:].reshape(2, HEIGHT // 2, WIDTH // 2)
        self._u, self._v = chroma[0], chroma[1]
        self._last_bg: int | None = None
        self._noise: np.ndarray | None = None
        if texture:
            rng = np.random.default_rng(20240601)
            cells = (NOISE_FRAMES, (HEIGHT - STRIP_H) // NOISE_CELL, WIDTH // NOISE_CELL)
            small = rng.integers(-NOISE_AMPLITUDE, NOISE_AMPLITUDE + 1, cells, dtype=np.int16)
            self._noise = small.repeat(NOISE_CELL, axis=1).repeat(NOISE_CELL, axis=2)

    def paint(self, frame_no: int, capture_ms: int) -> av.VideoFrame:
        """A frame showing `capture_ms` and `frame_no` in the strip (no pts set)."""
        bg = (frame_no // HUE_STEP_FRAMES) % len(self._yuv)
        if bg != self._last_bg:
            y, u, v = self._yuv[bg]
            self._y[STRIP_H:] = y
            self._u[STRIP_H // 2 :] = u
            self._v[STRIP_H // 2 :] = v
            self._u[: STRIP_H // 2] = 128  # grey strip: clean luma, no colour bleed
            self._v[: STRIP_H // 2] = 128
            self._last_bg = bg
        if self._noise is not None:
            textured = self._noise[frame_no % NOISE_FRAMES] + self._yuv[bg][0]
            np.clip(textured, 0, 255, out=textured)
            self._y[STRIP_H:] = textured
        bits = encode_bits(capture_ms, frame_no).reshape(ROWS, COLS)
        luma = np.where(bits == 1, WHITE, BLACK).astype(np.uint8)
        self._y[:STRIP_H] = np.repeat(np.repeat(luma, BLOCK_H, axis=0), BLOCK_W, axis=1)
        return av.VideoFrame.from_ndarray(self._buf, format="yuv420p")


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """The Y plane as a (height, width) view, without a full-frame conversion."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "nv12"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype=np.uint8)
    return rows.reshape(-1, plane.line_size)[: frame.height, : frame.width]


@functools.lru_cache(maxsize=8)
def _sample_grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Row and column indices of each block's centre patch, for one frame size."""
    sx, sy = width / WIDTH, height / HEIGHT
    ny = max(1, int((BLOCK_H - 2 * _MARGIN_Y) * sy))
    nx = max(1, int((BLOCK_W - 2 * _MARGIN_X) * sx))
    y0 = (np.arange(ROWS) * BLOCK_H + _MARGIN_Y) * sy
    x0 = (np.arange(COLS) * BLOCK_W + _MARGIN_X) * sx
    ys = (y0.astype(int)[:, None] + np.arange(ny)).ravel()
    xs = (x0.astype(int)[:, None] + np.arange(nx)).ravel()
    return ys, xs, ny, nx


def read_painted(frame: av.VideoFrame) -> tuple[int, int] | None:
    """(capture_ms, frame_no) from a decoded painted frame, or None if the strip is not there.

    Block positions scale with the frame size, so a receiver-side rescale still reads.
    """
    luma = _luma(frame)
    ys, xs, ny, nx = _sample_grid(frame.width, frame.height)
    patches = luma[ys][:, xs].reshape(ROWS, ny, COLS, nx)
    means = patches.mean(axis=(1, 3), dtype=np.float32).ravel()
    if np.any((means > _LOW) & (means < _HIGH)):
        return None
    return decode_bits((means >= (BLACK + WHITE) / 2).astype(np.uint8))


def dominant_colour(frame: av.VideoFrame) -> tuple[int, int, int]:
    """Mean RGB of the background below the strip (from plane means: no full RGB conversion)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    arr = frame.to_ndarray()
    h, w = frame.height, frame.width
    top = int((STRIP_H + 8) * h / HEIGHT)
    y = arr[top:h].mean()
    chroma = arr[h:].reshape(2, h // 2, w // 2)
    u = chroma[0, top // 2 :].mean()
    v = chroma[1, top // 2 :].mean()
    return yuv_to_rgb(float(y), float(u), float(v))


def now_ms() -> int:
    """Wall-clock ms mod 2**40: the time base painted into frames."""
    return int(time.time() * 1000) % TIME_MOD


def latency_ms(capture_ms: int, at_ms: int | None = None) -> int:
    """Milliseconds from a painted capture time to `at_ms` (default now), modulo the wrap."""
    at = now_ms() if at_ms is None else at_ms
    return (at - capture_ms) % TIME_MOD


class PaintedVideoTrack(VideoStreamTrack):
    """640x360 yuv420p at `fps` with the time strip painted at capture (send) time.

    `colour` (RGB tuple or a name from NAMED_COLOURS) fixes the background; otherwise its hue
    cycles slowly with the frame number. `texture` adds moving noise so the encoder really
    produces its target bitrate (see NOISE_*).
    """

    def __init__(
        self,
        colour: tuple[int, int, int] | str | None = None,
        fps: int = FPS,
        texture: bool = True,
    ) -> None:
        super().__init__()
        self._painter = Painter(colour, texture)
        self._fps = fps
        self._t0: float | None = None
        self.frame_no = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            self.frame_no += 1
            wait = self._t0 + self.frame_no / self._fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = self._painter.paint(self.frame_no, now_ms())
        frame.pts = self.frame_no * VIDEO_CLOCK // self._fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """48 kHz mono s16 sine tone in 20 ms (960-sample) frames, paced by wall clock."""

    def __init__(self, frequency: int = 440, amplitude: float = 0.2) -> None:
        super().__init__()
        # An integer frequency repeats every second, and 48000 is a multiple of 960.
        n = np.arange(AUDIO_RATE)
        wave = amplitude * 32767 * np.sin(2 * np.pi * frequency * n / AUDIO_RATE)
        self._table = wave.astype(np.int16)
        self._t0: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            self._pts += AUDIO_SAMPLES
            wait = self._t0 + self._pts / AUDIO_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        offset = self._pts % AUDIO_RATE
        samples = self._table[offset : offset + AUDIO_SAMPLES].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class _PinnedH264Encoder(H264Encoder):
    """aiortc's H.264 encoder at a fixed bitrate: REMB from the receiver is recorded, not obeyed."""

    def __init__(self, bitrate: int) -> None:
        super().__init__()
        self._pinned = bitrate
        self.last_remb: int | None = None

    @property
    def target_bitrate(self) -> int:
        return self._pinned

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self.last_remb = bitrate


class _PinnedVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder at a fixed bitrate (see _PinnedH264Encoder)."""

    def __init__(self, bitrate: int) -> None:
        super().__init__()
        self._pinned = bitrate
        self._Vp8Encoder__target_bitrate = bitrate  # read directly for "bufsize"
        self.last_remb: int | None = None

    @property
    def target_bitrate(self) -> int:
        return self._pinned

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        self.last_remb = bitrate


def pin_video_bitrate(sender: RTCRtpSender, bitrate: int = 600_000, codec: str = "H264") -> Any:
    """Make an aiortc video sender encode at `bitrate` bps, whatever REMB says. Returns the encoder.

    Why this way: aiortc 1.16 creates the encoder lazily on the first frame, only if
    `RTCRtpSender.__encoder` is None, and starts it at codecs.h264.DEFAULT_BITRATE (1 Mbps; VP8
    500 kbps), clamped to 0.5-3 Mbps. Its REMB handler then sets `encoder.target_bitrate`
    from the receiver's estimate. Installing our own encoder instance before any frame is
    encoded (call this before setRemoteDescription) keeps the rate per sender (no module
    globals patched) and deterministic for load tests, which is what we want to measure the SFU
    with; `encoder.last_remb` still shows what the receiver asked for. The codec must be the one
    that will be negotiated (force it with setCodecPreferences).
    """
    if codec.upper() == "H264":
        encoder: Any = _PinnedH264Encoder(bitrate)
    elif codec.upper() == "VP8":
        encoder = _PinnedVp8Encoder(bitrate)
    else:
        raise ValueError(f"cannot pin bitrate for codec {codec!r}")
    if not hasattr(sender, "_RTCRtpSender__encoder"):  # private API of aiortc 1.16
        raise RuntimeError("this aiortc has no RTCRtpSender.__encoder to pin the bitrate")
    sender._RTCRtpSender__encoder = encoder
    return encoder
