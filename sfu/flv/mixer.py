"""The co-host picture for FLV: each publisher decoded once, one canvas, one H.264 encode.

Runs on its own codec thread (an ``OrderedWorker``) while a room has co-hosts. Jobs are the
publishers' reassembled frames in arrival order; each is decoded with that publisher's decoder
and kept as its latest picture. The anchor's frames drive the output: each one composes the
canvas from the latest picture of every publisher (a co-host that stalls keeps its last
picture; one that has not decoded yet shows black) and is encoded with the anchor frame's
timestamp, so the mixed stream runs on the anchor's timeline, like the remuxed one it replaces.

Layouts (``--flv-layout``): ``side_by_side`` puts the anchor on the left half of a canvas twice
its width and the co-hosts stacked on the right half; ``pip`` keeps the anchor's canvas and
insets the co-hosts, a quarter wide, up from the bottom-right corner. Pictures keep their aspect
ratio inside their tile (black bars).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import av
import numpy as np

from sfu.flv.transcode import H264Encoder, H264Frame
from signaling.live.schema import LAYOUTS

PIP_SCALE = 4  # a co-host inset is 1/4 of the canvas width
PIP_MARGIN = 16


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class MixFrame:
    """One publisher's reassembled frame for the mixer (Annex-B H.264 or a VP8 frame)."""

    slot: int
    data: bytes
    timestamp_ms: int  # on the room's FLV timeline (used for the anchor's frames)
    force_keyframe: bool = False


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def canvas_size(layout: str, anchor: tuple[int, int]) -> tuple[int, int]:
    width, height = anchor
    return (_even(2 * width), _even(height)) if layout == "side_by_side" else (_even(width),
                                                                               _even(height))


def tiles(layout: str, canvas: tuple[int, int], cohosts: int) -> list[Tile]:
    """The anchor's tile, then one per co-host, in slot order."""
    width, height = canvas
    if layout == "side_by_side":
        half = _even(width / 2)
        rows = max(cohosts, 1)
        row = _even(height / rows)
        return [Tile(0, 0, half, height),
                *(Tile(half, i * row, width - half, row) for i in range(cohosts))]
    inset_w = _even(width / PIP_SCALE)
    inset_h = _even(height / PIP_SCALE)
    out = [Tile(0, 0, width, height)]
    for i in range(cohosts):
        y = height - (i + 1) * (inset_h + PIP_MARGIN)
        out.append(Tile(_even(width - inset_w - PIP_MARGIN), _even(max(y, 0)), inset_w, inset_h))
    return out


def fit(picture: tuple[int, int], tile: Tile) -> Tile:
    """The largest rectangle of the picture's aspect ratio inside ``tile``, centred."""
    pw, ph = picture
    scale = min(tile.width / pw, tile.height / ph)
    width, height = min(_even(pw * scale), tile.width), min(_even(ph * scale), tile.height)
    x = tile.x + _even((tile.width - width) / 2) if tile.width > width else tile.x
    y = tile.y + _even((tile.height - height) / 2) if tile.height > height else tile.y
    return Tile(x, y, width, height)


class Canvas:
    """A yuv420p canvas as one numpy array (Y rows, then U, then V), black when cleared."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.planes = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self.clear()

    def clear(self) -> None:
        self.planes[: self.height] = 16  # video-range black
        self.planes[self.height:] = 128

    def paste(self, picture: av.VideoFrame, where: Tile) -> None:
        scaled = picture.reformat(width=where.width, height=where.height, format="yuv420p")
        src = scaled.to_ndarray()  # (h * 3 / 2, w): Y, then U and V as half-width rows
        w, h = where.width, where.height
        self.planes[where.y:where.y + h, where.x:where.x + w] = src[:h]
        chroma = self.planes[self.height:].reshape(self.height, self.width // 2)
        src_chroma = src[h:].reshape(h, w // 2)  # U rows then V rows, h/2 each
        cx, cy, half = where.x // 2, where.y // 2, self.height // 2
        chroma[cy:cy + h // 2, cx:cx + w // 2] = src_chroma[: h // 2]
        chroma[half + cy:half + cy + h // 2, cx:cx + w // 2] = src_chroma[h // 2:]

    def frame(self) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.planes, format="yuv420p")


class VideoMixer:
    """Decoders per slot, the latest picture per slot, the canvas and its encoder."""

    def __init__(self, codec: str, layout: str = LAYOUTS[0], bitrate: int = 1_500_000,
                 keyframe_interval_s: float = 2.0) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"FLV layout must be one of {LAYOUTS}, not {layout!r}")
        self.codec = codec.lower()
        self.layout = layout
        self.slots: list[int] = [0]  # slots to show, anchor first (set by the output)
        self._decoders: dict[int, av.VideoCodecContext] = {}
        self._pictures: dict[int, av.VideoFrame] = {}
        self._canvas: Canvas | None = None
        self._encoder = H264Encoder(bitrate, keyframe_interval_s)
        self._first = True
        self.cpu_s = 0.0  # thread CPU time spent here: the mixer's cost per room

    def process(self, job: MixFrame) -> list[H264Frame]:
        started = time.thread_time()
        try:
            return self._process(job)
        finally:
            self.cpu_s += time.thread_time() - started

    def _process(self, job: MixFrame) -> list[H264Frame]:
        decoder = self._decoders.get(job.slot)
        if decoder is None:
            created = av.CodecContext.create(self.codec, "r")
            assert isinstance(created, av.VideoCodecContext)
            decoder = self._decoders[job.slot] = created
        try:
            pictures = decoder.decode(av.Packet(job.data))
        except av.FFmpegError:
            return []  # a broken frame: its publisher gets asked for a keyframe on loss
        for picture in pictures:
            assert isinstance(picture, av.VideoFrame)
            self._pictures[job.slot] = picture
        if job.slot != 0 or 0 not in self._pictures or not pictures:
            return []
        slots = self.slots
        for slot in [s for s in self._pictures if s not in slots]:
            self.forget(slot)  # a co-host that left: here, on the mixer's thread
        return self._compose(job, slots)

    def _compose(self, job: MixFrame, slots: list[int]) -> list[H264Frame]:
        anchor = self._pictures[0]
        size = canvas_size(self.layout, (anchor.width, anchor.height))
        if self._canvas is None or (self._canvas.width, self._canvas.height) != size:
            self._canvas = Canvas(*size)
        canvas = self._canvas
        canvas.clear()
        cohosts = [s for s in slots if s != 0]
        for slot, tile in zip([0, *cohosts], tiles(self.layout, size, len(cohosts)), strict=True):
            picture = self._pictures.get(slot)
            if picture is not None:
                canvas.paste(picture, fit((picture.width, picture.height), tile))
        force, self._first = job.force_keyframe or self._first, False
        return self._encoder.encode(canvas.frame(), job.timestamp_ms, force)

    def forget(self, slot: int) -> None:
        """A co-host left: its decoder and last picture go, so a later one on the slot starts
        clean (call on the mixer's thread)."""
        self._decoders.pop(slot, None)
        self._pictures.pop(slot, None)
