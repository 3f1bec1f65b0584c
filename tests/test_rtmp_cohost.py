"""An RTMP anchor (ffmpeg, OBS-like) with a WHIP co-host: WebRTC viewers see both, and the
room's HTTP-FLV switches to the co-host mix and back, in one response."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import Server, free_port, loopback_config
from test_cohost import invite
from test_flv_mixer import FlvReader, _is
from test_rtmp_ingest import live, pushing, rtmp_url
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.flv.manager import FLV_KEY
from shopcast.config import Config

pytestmark = pytest.mark.slow


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
    reader = FlvReader(f"{server.url}/live/{room}.flv?token="
                       f"{server.token(room, 'v', 'subscribe')}")
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
                                   PaintedVideoTrack(colour="blue"), ToneAudioTrack())
            await wait_for(lambda: reader.count(1280, "red", "blue") >= 30, 20,
                           "anchor left and co-host right, in the same response")
            assert outputs[room].stats()["mixing"]

            await cohost.close()
            cohost = None
            mixed = len(reader.pictures)
            await wait_for(
                lambda: sum(p.width == 640 and _is(p.left, "red") and _is(p.right, "red")
                            for p in reader.pictures[mixed:]) >= 30,
                20, "the anchor alone again, still the same response")
            assert not outputs[room].stats()["mixing"]
            assert not reader.ended and not task.done()
            assert reader.video_ts == sorted(reader.video_ts), "timestamps never step back"
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if cohost is not None:
                await cohost.close()
