"""RTMP in multi-node mode, with real processes (redis-server, two ``shopcast sfu`` nodes with
their RTMP doors, one ``shopcast signaling``): an encoder publishes straight to a node (RTMP
cannot be redirected), the room is placed where the publish landed, viewers play it through
the signaling process's front door (WHEP forwarded, FLV redirected), and a publish of the same
room at the other node is refused with the owner's name."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from conftest import free_port
from flv_helpers import ffprobe
from test_multinode import Proc, spawn, stop_all, token, wait_started
from test_rtmp_ingest import ffmpeg_push, pushing
from waiting import wait_for

from loadtest.clients import play

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest_asyncio.fixture
async def cluster(redis_server: str, tmp_path: Path
                  ) -> AsyncIterator[tuple[dict[str, Proc], dict[str, int]]]:
    prefix = f"rtmpmn{os.getpid()}{int(time.time())}"
    rtmp = {"sfu-1": free_port(), "sfu-2": free_port()}
    procs = {
        "sfu-1": spawn("sfu-1", "sfu", redis_server, prefix, tmp_path, rtmp["sfu-1"]),
        "sfu-2": spawn("sfu-2", "sfu", redis_server, prefix, tmp_path, rtmp["sfu-2"]),
        "sig": spawn("sig", "signaling", redis_server, prefix, tmp_path),
    }
    try:
        await wait_started(procs)
        yield procs, rtmp
    finally:
        stop_all(procs)


async def test_rtmp_lands_on_a_node_and_plays_through_the_front_door(
    cluster: tuple[dict[str, Proc], dict[str, int]]
) -> None:
    procs, rtmp = cluster
    room = "mnrtmp"
    url = f"rtmp://127.0.0.1:{rtmp['sfu-2']}/live/{room}?token={token(room, 'anchor', 'publish')}"
    with pushing(ffmpeg_push(url, seconds=40)):
        viewer = None
        deadline = time.monotonic() + 15
        while viewer is None:  # the front door answers not_live until the node is live
            try:
                viewer = await play(procs["sig"].url, room, token(room, "v", "subscribe"))
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        try:
            await wait_for(lambda: viewer.frames >= 30, 20, "30 frames through the front door")
            async with aiohttp.ClientSession() as http, http.get(  # the plan's ticket
                    f"{procs['sig'].url}/api/v1/rooms/{room}/playback",
                    headers={"Authorization": f"Bearer {token(room, 'flv', 'subscribe')}"}) as r:
                ticket = (await r.json())["flv_url"].partition("?")[2]
            flv = f"{procs['sig'].url}/live/{room}.flv?{ticket}"  # through the front door
            probe = await asyncio.to_thread(ffprobe, flv)  # 307 to sfu-2, followed by ffprobe
            assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}
            elsewhere = ffmpeg_push(
                f"rtmp://127.0.0.1:{rtmp['sfu-1']}/live/{room}"
                f"?token={token(room, 'anchor2', 'publish')}", seconds=5)
            with pushing(elsewhere):
                assert await asyncio.to_thread(elsewhere.wait, 15) != 0
                assert elsewhere.stderr is not None
                assert b"room_elsewhere" in elsewhere.stderr.read(), "told where the room is"
            assert "room_elsewhere" in procs["sfu-1"].log.read_text(errors="replace")
        finally:
            await viewer.close()
