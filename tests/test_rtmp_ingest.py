"""RTMP ingest end to end, with the encoders anchors really use: the ffmpeg CLI (OBS-style
settings) and GStreamer's rtmp2sink, into a real app; aiortc WHEP viewers decode and ffprobe
reads the HTTP-FLV output."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Server, free_port, loopback_config
from flv_helpers import ffprobe
from live_helpers import WsClient
from rest_helpers import forge_token
from test_flv_mixer import FlvReader
from waiting import wait_for

from loadtest.clients import play
from sfu.node import NODE_KEY
from shopcast.config import Config
from signaling.tokens import mint

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, rtmp_port=free_port())


def rtmp_url(server: Server, room: str, token: str) -> str:
    return f"rtmp://127.0.0.1:{server.config.rtmp_port}/live/{room}?token={token}"


def ffmpeg_push(url: str, *, seconds: float = 30, bframes: int = 0, audio: bool = True,
                gop: int = 30) -> subprocess.Popen[bytes]:
    """ffmpeg as OBS would push: x264 High, AAC, 1 s GOP, real time."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re",
            "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}"]
    args += ["-c:v", "libx264", "-profile:v", "high", "-bf", str(bframes), "-g", str(gop),
             "-pix_fmt", "yuv420p", "-preset", "veryfast"]
    if bframes == 0:
        args += ["-tune", "zerolatency"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-f", "flv", url]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def pushing(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


async def live(server: Server, room: str, limit_s: float = 10) -> None:
    node = server.app[NODE_KEY]
    await wait_for(lambda: room in node.rooms and node.rooms[room].live, limit_s, "RTMP live")


async def test_ffmpeg_push_plays_over_webrtc_and_flv(server: Server) -> None:
    url = rtmp_url(server, "rtmp1", server.token("rtmp1", "anchor", "publish"))
    with pushing(ffmpeg_push(url)):
        await live(server, "rtmp1")
        pts: dict[int, list[int]] = {0: [], 1: [], 2: []}

        def recorder(i: int) -> Any:
            def on_frame(frame: Any) -> None:
                pts[i].append(frame.pts)
            return on_frame

        viewers = [await play(server.url, "rtmp1",
                              server.token("rtmp1", f"v{i}", "subscribe"), on_frame=recorder(i))
                   for i in range(3)]
        try:
            await wait_for(lambda: all(len(p) >= 60 for p in pts.values()), 20, "60 frames each")
            for i in range(3):
                assert pts[i] == sorted(pts[i]), f"viewer {i}: frames in order"
                assert viewers[i].lost == 0
            probe = await asyncio.to_thread(ffprobe, server.flv_url("rtmp1"))
            streams = {s["codec_type"]: s for s in probe["streams"]}
            assert streams["video"]["codec_name"] == "h264"
            assert streams["video"]["profile"] == "High"
            assert streams["audio"]["codec_name"] == "aac"
        finally:
            for viewer in viewers:
                await viewer.close()


async def test_a_bad_token_is_refused_and_leaves_no_room(server: Server) -> None:
    node = server.app[NODE_KEY]
    cases = {
        "garbage": "not-a-token",
        "wrong_room": server.token("other", "anchor", "publish"),
        "no_grant": server.token("rtmp2", "anchor", "subscribe"),
        "every_room_without_admin": forge_token(server.config.secret, "*", "anchor", "publish"),
        "expired": mint(server.config.secret, room="rtmp2", identity="anchor", grants=["publish"],
                        ttl=60, now=int(time.time()) - 3600),
    }
    for why, token in cases.items():
        proc = ffmpeg_push(rtmp_url(server, "rtmp2", token), seconds=5)
        with pushing(proc):
            code = await asyncio.to_thread(proc.wait, 15)
            assert code != 0, f"{why}: ffmpeg was let in"
            assert "rtmp2" not in node.rooms, f"{why}: a room was left behind"
    # the door keeps serving: a good token gets in
    with pushing(ffmpeg_push(rtmp_url(server, "rtmp2",
                                      server.token("rtmp2", "anchor", "publish")))):
        await live(server, "rtmp2")


async def test_a_second_anchor_is_refused(server: Server) -> None:
    first = ffmpeg_push(rtmp_url(server, "rtmp3", server.token("rtmp3", "a", "publish")))
    with pushing(first):
        await live(server, "rtmp3")
        second = ffmpeg_push(rtmp_url(server, "rtmp3", server.token("rtmp3", "b", "publish")),
                             seconds=5)
        with pushing(second):
            assert await asyncio.to_thread(second.wait, 15) != 0
        assert first.poll() is None, "the anchor keeps publishing"


async def test_rest_kick_ends_the_encoder_and_the_room(server: Server) -> None:
    proc = ffmpeg_push(rtmp_url(server, "rtmp4", server.token("rtmp4", "anchor", "publish")))
    with pushing(proc):
        await live(server, "rtmp4")
        node = server.app[NODE_KEY]
        admin = server.token("rtmp4", "admin", "admin")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}/api/v1/rooms/rtmp4/participants",
                                headers={"Authorization": f"Bearer {admin}"}) as response:
                listed = (await response.json())["participants"]
            assert [(p["identity"], p["transport"]) for p in listed] == [("anchor", "rtmp")]
            async with http.get(f"{server.url}/api/v1/rooms/rtmp4",
                                headers={"Authorization": f"Bearer {admin}"}) as response:
                counts = (await response.json())["counts"]
            assert (counts["participants"], counts["viewers"]) == (1, 0), counts
            async with http.delete(f"{server.url}/api/v1/rooms/rtmp4/participants/anchor",
                                   headers={"Authorization": f"Bearer {admin}"}) as response:
                assert response.status == 200, await response.text()
        assert await asyncio.to_thread(proc.wait, 10) is not None, "ffmpeg was disconnected"
        await wait_for(lambda: "rtmp4" not in node.rooms or not node.rooms["rtmp4"].live, 5,
                       "room no longer live")


async def test_a_video_only_encoder_gets_an_honest_flv_header(server: Server) -> None:
    url = rtmp_url(server, "rtmp5", server.token("rtmp5", "anchor", "publish"))
    with pushing(ffmpeg_push(url, audio=False)):
        await live(server, "rtmp5")
        async with aiohttp.ClientSession() as http, http.get(server.flv_url("rtmp5")) as response:
            head = await response.content.readexactly(13)
        assert head[:3] == b"FLV" and head[4] == 0x01, "video only: no audio flag"


def gst_launch() -> str:
    path = shutil.which("gst-launch-1.0")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gst-launch-1.0 is missing (./dev setup installs GStreamer)")
        pytest.skip("gst-launch-1.0 is missing")
    return path


async def test_gstreamer_rtmp2sink_push_plays(server: Server) -> None:
    url = rtmp_url(server, "rtmp6", server.token("rtmp6", "anchor", "publish"))
    pipeline = [
        gst_launch(), "-q", "videotestsrc", "is-live=true", "num-buffers=600", "!",
        "video/x-raw,format=I420,width=320,height=240,framerate=30/1", "!",
        "x264enc", "tune=zerolatency", "key-int-max=30", "bframes=0", "!", "h264parse", "!",
        "flvmux", "streamable=true", "name=mux", "!", "rtmp2sink", f"location={url}",
        "audiotestsrc", "is-live=true", "!", "audioconvert", "!", "avenc_aac", "!",
        "aacparse", "!", "mux.",
    ]
    proc = subprocess.Popen(pipeline, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220
    with pushing(proc):
        await live(server, "rtmp6", limit_s=15)
        viewer = await play(server.url, "rtmp6", server.token("rtmp6", "v", "subscribe"))
        try:
            await wait_for(lambda: viewer.frames >= 30, 15, "30 decoded frames")
        finally:
            await viewer.close()



async def test_b_frames_reach_webrtc_viewers_without_them_and_flv_with_them(
        server: Server) -> None:
    url = rtmp_url(server, "rtmp7", server.token("rtmp7", "anchor", "publish"))
    with pushing(ffmpeg_push(url, bframes=2)):
        await live(server, "rtmp7")
        pts: list[int] = []
        viewer = await play(server.url, "rtmp7", server.token("rtmp7", "v", "subscribe"),
                            on_frame=lambda frame: pts.append(frame.pts))
        try:
            await wait_for(lambda: len(pts) >= 60, 20, "60 decoded frames")
            assert pts == sorted(pts), "presentation order"
            steps = [b - a for a, b in itertools.pairwise(pts)]
            assert max(steps) <= 3 * 3000, f"no frame gap over 100 ms: {max(steps)}"
            node = server.app[NODE_KEY]
            publisher = next(iter(node.rooms["rtmp7"].publishers.values()))
            assert publisher.video.transcoding
            # the anchor is told: a room event, and a gauge in /metrics
            console = await WsClient.open(server.url, "rtmp7",
                                          server.token("rtmp7", "anchor", "publish", "subscribe"),
                                          after_seq=0)
            try:
                warning = await console.until("publisher_warning")
                assert (warning["identity"], warning["code"]) == ("anchor", "bframes")
                assert "bframes=0" in warning["message"]
            finally:
                await console.close()
            async with aiohttp.ClientSession() as http, http.get(
                    f"{server.url}/metrics") as response:
                text = await response.text()
            assert 'shopcast_rtmp_bframes{room="rtmp7",slot="0"} 1' in text
            assert publisher.id not in text, "no session id on /metrics"
            probe = await asyncio.to_thread(ffprobe, server.flv_url("rtmp7"))
            video = next(s for s in probe["streams"] if s["codec_type"] == "video")
            assert video["profile"] == "High" and video["has_b_frames"] > 0, video
        finally:
            await viewer.close()


async def test_an_encoder_that_drops_and_returns_keeps_its_viewers(server: Server) -> None:
    """A TCP drop (not an unpublish) keeps the session for the grace period: the same identity
    publishing again continues the tracks and the viewer plays on, never re-joining."""
    url = rtmp_url(server, "rtmp8", server.token("rtmp8", "anchor", "publish"))
    node = server.app[NODE_KEY]
    first = ffmpeg_push(url)
    with pushing(first):
        await live(server, "rtmp8")
        pts: list[int] = []
        viewer = await play(server.url, "rtmp8", server.token("rtmp8", "v", "subscribe"),
                            on_frame=lambda frame: pts.append(frame.pts))
        reader = FlvReader(server.flv_url("rtmp8"))
        reading = asyncio.create_task(reader.run())
        await wait_for(lambda: len(pts) >= 30 and len(reader.pictures) >= 30, 15,
                       "30 frames before the drop, over WebRTC and FLV")
        publisher = next(iter(node.rooms["rtmp8"].publishers.values()))
        viewer_ids = set(node.rooms["rtmp8"].viewers)
        first.kill()  # no unpublish: the connection just goes away
        await wait_for(lambda: publisher.state == "reconnecting", 5, "session waiting")
        before, flv_before = len(pts), len(reader.pictures)
    try:
        with pushing(ffmpeg_push(url)):
            await wait_for(lambda: len(pts) >= before + 30, 15, "30 frames after the return")
            await wait_for(lambda: len(reader.pictures) >= flv_before + 30, 15,
                           "30 FLV pictures after the return, in the same response")
            assert not reader.ended
            assert reader.video_ts == sorted(reader.video_ts), "FLV time goes on forward"
            assert publisher.reconnects == 1 and not publisher.closed
            assert node.rooms["rtmp8"].publishers == {publisher.id: publisher}
            assert pts == sorted(pts), "timestamps continue forward across the return"
            assert set(node.rooms["rtmp8"].viewers) == viewer_ids, "the viewer never left"
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await viewer.close()


async def test_rest_mute_stops_the_video_for_webrtc_and_flv_alike(server: Server) -> None:
    url = rtmp_url(server, "rtmp9", server.token("rtmp9", "anchor", "publish"))
    admin = {"Authorization": f"Bearer {server.token('rtmp9', 'admin', 'admin')}"}
    mute_url = f"{server.url}/api/v1/rooms/rtmp9/participants/anchor/mute"
    with pushing(ffmpeg_push(url)):
        await live(server, "rtmp9")
        viewer = await play(server.url, "rtmp9", server.token("rtmp9", "v", "subscribe"))
        reader = FlvReader(server.flv_url("rtmp9"))
        reading = asyncio.create_task(reader.run())
        try:
            await wait_for(lambda: viewer.frames >= 20 and len(reader.pictures) >= 20, 15,
                           "playing")
            async with aiohttp.ClientSession(headers=admin) as http:
                async with http.post(mute_url, json={"kind": "video"}) as response:
                    assert response.status == 200, await response.text()
                await asyncio.sleep(0.5)
                frames, pictures = viewer.frames, len(reader.pictures)
                await asyncio.sleep(1.5)
                assert viewer.frames - frames <= 2 and len(reader.pictures) - pictures <= 2
                async with http.post(mute_url, json={"kind": "video", "muted": False}) as response:
                    assert response.status == 200, await response.text()
            await wait_for(lambda: viewer.frames >= frames + 20
                           and len(reader.pictures) >= pictures + 20, 10, "unmuted")
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            await viewer.close()


async def test_a_banned_identity_cannot_publish_over_rtmp(server: Server) -> None:
    admin = {"Authorization": f"Bearer {server.token('rtmp10', 'admin', 'admin')}"}
    async with aiohttp.ClientSession(headers=admin) as http, http.post(
        f"{server.url}/api/v1/rooms/rtmp10/chat/ban", json={"identity": "anchor"}
    ) as response:
        assert response.status == 200, await response.text()
    banned = ffmpeg_push(rtmp_url(server, "rtmp10", server.token("rtmp10", "anchor", "publish")),
                         seconds=5)
    with pushing(banned):
        assert await asyncio.to_thread(banned.wait, 15) != 0
        assert banned.stderr is not None and b"banned" in banned.stderr.read()
    assert "rtmp10" not in server.app[NODE_KEY].rooms
    with pushing(ffmpeg_push(rtmp_url(server, "rtmp10",
                                      server.token("rtmp10", "other", "publish")))):
        await live(server, "rtmp10")
