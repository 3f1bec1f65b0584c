"""An RTMP anchor (ffmpeg, OBS-like) with a WHIP co-host: WebRTC viewers see both, and the
room's HTTP-FLV switches to the co-host mix and back, in one response."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from conftest import Server, free_port, loopback_config
from test_cohost import invite
from test_flv_mixer import FlvReader
from test_rtmp_ingest import live, pushing, rtmp_url
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.flv.manager import FLV_KEY
from shopcast.config import Config

pytestmark = pytest.mark.slow


def tones(flv: bytes, start: int = 0) -> dict[int, float]:
    """Share of the spectrum's energy near 440 and 1000 Hz in the audio of the last second of
    an FLV byte stream (AAC decoded with each sequence header as it came)."""
    decoder: Any = None
    samples: list[np.ndarray] = []
    rate = 48000
    for kind, _ts, body, offset in _tags(flv):
        if kind != 8 or len(body) < 2 or body[0] >> 4 != 10:
            continue
        if body[1] == 0:
            decoder = av.CodecContext.create("aac", "r")
            decoder.extradata = body[2:]
            continue
        if decoder is None or offset < start:
            continue
        with contextlib.suppress(av.FFmpegError):
            for frame in decoder.decode(av.Packet(body[2:])):
                rate = frame.sample_rate
                samples.append(frame.to_ndarray().mean(axis=0))
    audio = np.concatenate(samples)[-rate:] if samples else np.zeros(rate)
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    total = spectrum.sum() or 1.0
    return {f: float(spectrum[np.abs(freqs - f) < 20].sum() / total) for f in (440, 1000)}


def _tags(flv: bytes) -> Iterator[tuple[int, int, bytes, int]]:
    pos = 13
    while pos + 11 <= len(flv):
        size = int.from_bytes(flv[pos + 1:pos + 4], "big")
        if pos + 15 + size > len(flv):
            return
        ts = int.from_bytes(flv[pos + 4:pos + 7], "big") | (flv[pos + 7] << 24)
        yield flv[pos] & 0x1F, ts, flv[pos + 11:pos + 11 + size], pos
        pos += 15 + size


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, rtmp_port=free_port())


async def test_rtmp_anchor_and_whip_cohost_mix_in_flv(server: Server) -> None:
    import subprocess

    room, outputs = "rtmpmix", server.app[FLV_KEY].outputs
    url = rtmp_url(server, room, server.token(room, "anchor", "publish"))
    encoder = subprocess.Popen(  # noqa: ASYNC220
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "color=c=red:size=640x360:rate=30:duration=60",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=60",
         "-c:v", "libx264", "-profile:v", "high", "-bf", "0", "-g", "30", "-tune", "zerolatency",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    reader = FlvReader(server.flv_url(room, "v"))
    cohost = None
    task: asyncio.Task[None] | None = None
    with pushing(encoder):
        try:
            await live(server, room)
            await wait_for(lambda: room in outputs and outputs[room].live, 10, "FLV live")
            task = asyncio.create_task(reader.run())
            await wait_for(lambda: reader.count(640, "red", "red") >= 15, 15, "anchor alone")

            await invite(server, room, "guest")
            cohost = await publish(server.url, room, server.token(room, "guest", "cohost"),
                                   PaintedVideoTrack(colour="blue"), ToneAudioTrack(1000))
            await wait_for(lambda: reader.count(1280, "red", "blue") >= 30, 20,
                           "anchor left and co-host right, in the same response")
            assert outputs[room].stats()["mixing"]
            await asyncio.sleep(2)  # the mix's audio on air a while
            mixed_audio = tones(bytes(reader.raw))
            assert mixed_audio[440] > 0.1 and mixed_audio[1000] > 0.1, (
                f"FLV audio during the mix carries the anchor's 440 Hz and the co-host's "
                f"1000 Hz: {mixed_audio}")

            await cohost.close()
            cohost = None
            mixed = len(reader.pictures)
            await wait_for(
                lambda: reader.count(640, "red", "red", since=mixed) >= 30,
                20, "the anchor alone again, still the same response")
            assert not outputs[room].stats()["mixing"]
            after = len(reader.raw)
            await asyncio.sleep(2)
            alone = tones(bytes(reader.raw), start=after)
            assert alone[440] > 0.1 and alone[1000] < 0.02, f"the anchor's AAC again: {alone}"
            assert not reader.ended and not task.done()
            assert reader.video_ts == sorted(reader.video_ts), "timestamps never step back"
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if cohost is not None:
                await cohost.close()
