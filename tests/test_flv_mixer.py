"""The co-host mix for FLV: layout geometry, the canvas, the audio sum, and end to end: one HTTP
reader sees the anchor, then the anchor and the co-host side by side, then the anchor alone
again, without ever reconnecting."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from test_cohost import invite
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.flv.audio import SAMPLE_RATE, OpusToAac
from sfu.flv.manager import FLV_KEY
from sfu.flv.mixer import Canvas, Tile, canvas_size, fit, tiles

# --- geometry, canvas and audio (no network) --------------------------------------------------


def test_side_by_side_puts_the_anchor_left_and_stacks_cohosts_right() -> None:
    size = canvas_size("side_by_side", (640, 360))
    assert size == (1280, 360)
    assert tiles("side_by_side", size, 1) == [Tile(0, 0, 640, 360), Tile(640, 0, 640, 360)]
    two = tiles("side_by_side", size, 2)
    assert two[1:] == [Tile(640, 0, 640, 180), Tile(640, 180, 640, 180)]
    assert fit((640, 360), two[1]) == Tile(800, 0, 320, 180)  # aspect kept, centred


def test_pip_insets_cohosts_in_the_anchors_corner() -> None:
    size = canvas_size("pip", (640, 360))
    anchor, inset = tiles("pip", size, 1)
    assert size == (640, 360) and anchor == Tile(0, 0, 640, 360)
    assert (inset.width, inset.height) == (160, 90)
    assert inset.x + inset.width <= 640 and inset.y + inset.height <= 360 and inset.x > 320


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 36)) -> av.VideoFrame:
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:] = rgb
    return av.VideoFrame.from_ndarray(pixels, format="rgb24")


def test_canvas_paste_fills_each_tile_with_its_picture() -> None:
    canvas = Canvas(128, 36)
    canvas.paste(_solid((220, 20, 20)), Tile(0, 0, 64, 36))
    canvas.paste(_solid((20, 20, 220)), Tile(64, 0, 64, 36))
    rgb = canvas.frame().to_ndarray(format="rgb24").astype(int)
    left, right = rgb[:, 8:56].mean(axis=(0, 1)), rgb[:, 72:120].mean(axis=(0, 1))
    assert left[0] > 150 and left[2] < 80, left
    assert right[2] > 150 and right[0] < 80, right


def _flt(value: float, samples: int = 960) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(np.full((1, 2 * samples), value, np.float32),
                                       format="flt", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    return frame


def test_audio_mix_sums_cohosts_and_clips() -> None:
    mixer = OpusToAac()
    mixer._queues[1] = np.full(2 * 960, 0.25, np.float32)
    mixed = mixer._mix(_flt(0.5)).to_ndarray().reshape(-1)
    assert np.allclose(mixed, 0.75)
    mixer._queues[1] = np.full(2 * 960, 0.8, np.float32)
    assert np.allclose(mixer._mix(_flt(0.5)).to_ndarray(), 1.0)  # clipped, not wrapped
    mixer._queues[1] = np.full(2 * 100, 0.25, np.float32)  # a co-host short of samples
    short = mixer._mix(_flt(0.5)).to_ndarray().reshape(-1)
    assert np.allclose(short[:200], 0.75) and np.allclose(short[200:], 0.5)
    assert len(mixer._queues[1]) == 0


# --- end to end ---------------------------------------------------------------------------------


@dataclass
class Picture:
    ts: int
    width: int
    left: tuple[float, float, float]
    right: tuple[float, float, float]


@dataclass
class FlvReader:
    """One HTTP-FLV response, decoded like a player: a new decoder at each sequence header."""

    url: str
    pictures: list[Picture] = field(default_factory=list)
    video_ts: list[int] = field(default_factory=list)
    headers: int = 0
    raw: bytearray = field(default_factory=bytearray)
    ended: bool = False

    async def run(self) -> None:
        decoder: Any = None
        buf = bytearray()
        async with aiohttp.ClientSession() as http, http.get(self.url) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                self.raw += chunk
                buf += chunk
                if len(self.raw) == len(buf):
                    del buf[:13]  # FLV file header + first previous-tag-size
                while len(buf) >= 11:
                    size = int.from_bytes(buf[1:4], "big")
                    if len(buf) < 15 + size:
                        break
                    kind, body = buf[0] & 0x1F, bytes(buf[11:11 + size])
                    ts = int.from_bytes(buf[4:7], "big") | (buf[7] << 24)
                    del buf[:15 + size]
                    if kind != 9 or len(body) < 5:
                        continue
                    if body[1] == 0:
                        self.headers += 1
                        decoder = av.CodecContext.create("h264", "r")
                        decoder.extradata = body[5:]
                        continue
                    self.video_ts.append(ts)
                    if decoder is not None:
                        self._decode(decoder, ts, body[5:])
        self.ended = True

    def _decode(self, decoder: Any, ts: int, nalus: bytes) -> None:
        try:
            frames = decoder.decode(av.Packet(nalus))
        except av.FFmpegError:
            return
        for frame in frames:
            rgb = frame.to_ndarray(format="rgb24")
            height, width = rgb.shape[:2]
            band = rgb[height // 3: height * 9 // 10]  # below the painted time strip
            half = width // 2
            left = tuple(band[:, half // 8: half * 7 // 8].reshape(-1, 3).mean(axis=0))
            right = tuple(band[:, half + half // 8: width - half // 8].reshape(-1, 3).mean(axis=0))
            self.pictures.append(Picture(ts, width, left, right))  # type: ignore[arg-type]

    def count(self, width: int, left: str, right: str, since: int = 0) -> int:
        """Pictures (from number ``since`` on) of this width with these colours left and right."""
        return sum(p.width == width and _is(p.left, left) and _is(p.right, right)
                   for p in self.pictures[since:])


def _is(rgb: tuple[float, float, float], colour: str) -> bool:
    red, _green, blue = rgb
    return red > 140 and blue < 110 if colour == "red" else blue > 140 and red < 110


@pytest.mark.slow
async def test_flv_reader_sees_the_mix_while_a_cohost_is_on_and_the_anchor_after(
    server: Any, tmp_path: Path
) -> None:
    room, outputs = "mixflv", server.app[FLV_KEY].outputs
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    cohost = None
    reader = FlvReader(server.flv_url(room, "v"))
    task: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: room in outputs and outputs[room].live, 10, "FLV live")
        task = asyncio.create_task(reader.run())
        await wait_for(lambda: reader.count(640, "red", "red") >= 15, 15, "anchor alone")

        await invite(server, room, "guest")
        cohost = await publish(server.url, room, server.token(room, "guest", "cohost"),
                               PaintedVideoTrack(colour="blue"), ToneAudioTrack())
        await wait_for(lambda: reader.count(1280, "red", "blue") >= 30, 20,
                       "anchor left and co-host right, in the same response")
        assert outputs[room].stats()["mixing"]
        assert outputs[room].stats()["mixer_cpu_s"] > 0

        await cohost.close()
        cohost = None
        mixed = len(reader.pictures)
        await wait_for(
            lambda: reader.count(640, "red", "red", since=mixed) >= 30,
            20, "the anchor alone again, still the same response")
        assert not outputs[room].stats()["mixing"]
        assert not reader.ended and not task.done()
        assert reader.headers >= 3  # the anchor's, the mix's, the anchor's again
        assert reader.video_ts == sorted(reader.video_ts), "timestamps never step back"
        widths = [p.width for p in reader.pictures]
        switches = sum(a != b for a, b in itertools.pairwise(widths))
        assert switches == 2, widths  # one switch in, one out: no flapping
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if cohost is not None:
            await cohost.close()
        await anchor.close()
    capture = tmp_path / "switch.flv"
    capture.write_bytes(bytes(reader.raw))
    probe = await asyncio.to_thread(
        subprocess.run,
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,nb_read_frames", "-of", "csv=p=0", str(capture)],
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    codec, frames = probe.stdout.strip().split(",")[:2]
    assert codec == "h264" and int(frames) >= len(reader.pictures) - 5, probe.stdout
