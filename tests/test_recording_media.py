"""Recording what rooms really carry, read back with ffprobe and PyAV: a 30 s aiortc room, a
server killed with SIGKILL mid-recording, a co-host room (the mix, as FLV viewers see it) and
an RTMP anchor (ffmpeg's own H.264 and AAC)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from conftest import TEST_SECRET, Server, free_port, loopback_config
from test_cohost import invite
from test_recording import (
    decoded_end,
    decoded_video_end,
    download,
    finished,
    probe,
    record_a_room,
    recording_started,
)
from test_rtmp_ingest import ffmpeg_push, pushing, rtmp_url
from test_webhooks import Receiver, receiver  # noqa: F401 (the fixture)
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.recording.manager import RECORDING_KEY
from shopcast.config import Config
from signaling.tokens import mint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SHOPCAST = str(Path(sys.executable).with_name("shopcast"))


@pytest.fixture
def config(tmp_path: Path, receiver: Receiver) -> Config:  # noqa: F811
    return loopback_config(tmp_path, workers=0, record=True, rtmp_port=free_port(),
                           record_dir=str(tmp_path / "recordings"),
                           webhook_urls=[receiver.url], webhook_secret="hook-key")


async def test_a_30_s_room_gives_an_h264_aac_mp4_of_30_s(server: Server, tmp_path: Path,
                                                        receiver: Receiver) -> None:  # noqa: F811
    room = "rec30"
    recording = await record_a_room(server, room, 30)
    info = probe(await download(server, room, recording, tmp_path / "rec30.mp4"))
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    duration = float(info["format"]["duration"])
    assert 29 <= duration <= 31, duration
    assert abs(recording["duration_s"] - duration) < 0.5

    await wait_for(lambda: "recording_finished" in receiver.events(), 10, "the webhook")
    body, _ = receiver.posts[receiver.events().index("recording_finished")]
    assert json.loads(body)["recording"] == recording


def _start_server(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    args = [SHOPCAST, "serve", "--host", "127.0.0.1", "--port", str(port),
            "--secret", TEST_SECRET, "--secret-file", str(tmp_path / "secret"),
            "--workers", "0", "--ice-hosts", "127.0.0.1", "--rtmp-port", "0",
            "--record", "--record-dir", str(tmp_path / "recordings")]
    log = (tmp_path / "serve.log").open("wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _listed(url: str, room: str) -> list[dict[str, Any]]:
    token = mint(TEST_SECRET, room=room, identity="v", grants=["subscribe"], ttl=600)
    try:
        async with aiohttp.ClientSession() as http, http.get(
                f"{url}/api/v1/rooms/{room}/recordings?token={token}") as response:
            if response.status != 200:
                return []
            listed: list[dict[str, Any]] = (await response.json())["recordings"]
            return listed
    except aiohttp.ClientError:
        return []


async def test_a_killed_server_leaves_a_file_that_plays_to_its_last_fragment(
    tmp_path: Path
) -> None:
    port, room = free_port(), "reckill"
    url = f"http://127.0.0.1:{port}"
    server = _start_server(tmp_path, port)
    anchor = None
    try:
        deadline = time.monotonic() + 30
        while not await _healthy(url):
            assert time.monotonic() < deadline and server.poll() is None, \
                (tmp_path / "serve.log").read_text(errors="replace")
            await asyncio.sleep(0.2)
        token = mint(TEST_SECRET, room=room, identity="anchor", grants=["publish"], ttl=600)
        anchor = await publish(url, room, token, PaintedVideoTrack(colour="red"),
                               ToneAudioTrack())
        listed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 15
        while not listed:
            assert time.monotonic() < deadline, "the recording was never listed"
            await asyncio.sleep(0.2)
            listed = await _listed(url, room)
        # kill right after the recorder told the index how far it has muxed (every 2 s), so
        # that figure is what the process had recorded when it died
        seen = listed[0]["duration_s"]
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the recording's meta stopped moving"
            await asyncio.sleep(0.05)
            latest = (await _listed(url, room))[0]["duration_s"]
            if latest != seen and latest >= 8:
                break
            seen = latest
        server.send_signal(signal.SIGKILL)
        killed_at = time.time()
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        if anchor is not None:
            await anchor.close()
    recorded = killed_at - listed[0]["started_at"]
    folder = tmp_path / "recordings" / listed[0]["id"]
    files = sorted(folder.glob("*.mp4"))
    assert len(files) == 1, files
    end, pictures = decoded_end(files[0])  # every stream decodes to its end without an error
    # everything muxed up to the last whole fragment is there: a fragment is at most a second,
    # plus what the disk writer's thread had not written yet (on this shared 2-core machine,
    # under a load of ~20, up to ~0.7 s has been seen)
    assert latest - 2.0 <= end <= latest + 1.2, (latest, end)
    # and on the wall clock, give or take started_at's estimate (the newest tag's lag when the
    # recording began) and audio running a little ahead of the picture
    assert recorded - 3 <= end <= recorded + 1, (recorded, end)
    assert pictures >= 10
    info = probe(files[0])
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]


def _halves(frame: av.VideoFrame) -> tuple[Any, Any]:
    rgb = frame.to_ndarray(format="rgb24")
    height, width = rgb.shape[:2]
    band = rgb[height // 3: height * 9 // 10]
    half = width // 2
    left = band[:, half // 8: half * 7 // 8].reshape(-1, 3).mean(axis=0)
    right = band[:, half + half // 8: width - half // 8].reshape(-1, 3).mean(axis=0)
    return left, right


def _red(rgb: Any) -> bool:
    return bool(rgb[0] > 140 and rgb[2] < 110)


def _blue(rgb: Any) -> bool:
    return bool(rgb[2] > 140 and rgb[0] < 110)


async def test_a_cohost_room_records_the_mix(server: Server, tmp_path: Path) -> None:
    room = "recmix"
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    cohost = None
    try:
        await recording_started(server, room)
        await asyncio.sleep(3)
        await invite(server, room, "guest")
        cohost = await publish(server.url, room, server.token(room, "guest", "cohost"),
                               PaintedVideoTrack(colour="blue"), ToneAudioTrack())
        output = server.app[RECORDING_KEY].flv.outputs[room]
        await wait_for(lambda: output.stats()["mixing"], 10, "the mix")
        await asyncio.sleep(8)
    finally:
        if cohost is not None:
            await cohost.close()
        await anchor.close()
    recording = await finished(server, room)  # one recording across the switch
    path = await download(server, room, recording, tmp_path / "mix.mp4")
    widths: list[int] = []
    mixed = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            widths.append(frame.width)
            left, right = _halves(frame)
            if frame.width == 1280 and _red(left) and _blue(right):
                mixed += 1
    assert widths[0] == 640, widths[0]  # the anchor alone, then the mix, in one file
    assert mixed >= 40, f"{mixed} mixed pictures of {len(widths)}"
    switches = int(np.count_nonzero(np.diff([w == 1280 for w in widths])))
    assert 1 <= switches <= 2, f"{switches} switches: in, and out when the co-host left"


@pytest.mark.parametrize("bframes", [0, 2])
async def test_an_rtmp_anchor_is_recorded_as_it_came(server: Server, tmp_path: Path,
                                                    bframes: int) -> None:
    """The encoder's own H.264 (with B-frames: their composition offsets kept) and AAC."""
    room = f"recrtmp{bframes}"
    token = server.token(room, "anchor", "publish")
    with pushing(ffmpeg_push(rtmp_url(server, room, token), seconds=8,
                             bframes=bframes)) as proc:
        await recording_started(server, room)
        await asyncio.to_thread(proc.wait, 30)
    recording = await finished(server, room, limit_s=30)
    info = probe(await download(server, room, recording, tmp_path / "rtmp.mp4"))
    streams = {s["codec_name"] for s in info["streams"]}
    assert streams == {"h264", "aac"}
    assert 6.5 <= float(info["format"]["duration"]) <= 8.5, info["format"]
    end, pictures = decoded_video_end(tmp_path / "rtmp.mp4")
    assert pictures >= end * 25  # ffmpeg's 30 fps, every picture kept
    with av.open(str(tmp_path / "rtmp.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert times == sorted(set(times)), "pictures in presentation order, B-frames or not"
