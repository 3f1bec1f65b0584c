"""Recording across processes, as ``tests/test_multinode.py`` runs them: one redis-server, one
``shopcast sfu`` node and two ``shopcast signaling`` front doors sharing one record directory.
The anchor publishes through front door A; an admin switches the room's recording on through
front door B, which only writes the store and announces it on the bus: the node that has the
room starts recording. B lists it (the index is in Redis) and serves its media from the shared
directory; switching it off through A ends it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_front_door_processes import cluster  # noqa: F401 (the fixture)
from test_multinode import Proc, eventually, token

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def shared_record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process of the cluster (spawned after this) records into one directory."""
    monkeypatch.setenv("SHOPCAST_RECORD_DIR", str(tmp_path / "shared-recordings"))


async def call(method: str, url: str, bearer: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, headers={"Authorization": f"Bearer {bearer}"}) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.read()


async def test_recording_is_switched_listed_and_served_through_any_front_door(
    cluster: dict[str, Proc], tmp_path: Path  # noqa: F811
) -> None:
    sig_a, sig_b = cluster["sig-a"], cluster["sig-b"]
    room = "recnodes"
    admin, viewer = token(room, "boss", "admin"), token(room, "v", "subscribe")
    anchor_token = token(room, "anchor", "publish")

    async def anchor_published() -> Any:  # until the node's first heartbeat lands
        with contextlib.suppress(Exception):
            return await publish(sig_a.url, room, anchor_token, PaintedVideoTrack(),
                                 ToneAudioTrack())
        return None

    anchor = await eventually(anchor_published, 15, "WHIP through sig-a", every_s=0.3)
    try:
        await asyncio.sleep(1)
        listing = f"{sig_b.url}/api/v1/rooms/{room}/recordings"
        status, body = await call("GET", listing, viewer)
        assert status == 200 and body == {"recordings": []}  # --record is off

        status, body = await call("PUT", f"{sig_b.url}/api/v1/rooms/{room}/recording", admin,
                                  {"enabled": True})
        assert status == 200 and body == {"room": room, "enabled": True}

        async def recording_on_the_node() -> Any:
            status, body = await call("GET", listing, viewer)
            return status == 200 and body["recordings"] and body["recordings"][0]
        started = await eventually(recording_on_the_node, 10, "the node to record")
        assert not started["finished"]
        await asyncio.sleep(5)
        status, body = await call("PUT", f"{sig_a.url}/api/v1/rooms/{room}/recording", admin,
                                  {"enabled": False})
        assert status == 200

        async def finished() -> Any:
            status, body = await call("GET", listing, viewer)
            done = [r for r in body["recordings"] if r["finished"]] if status == 200 else []
            return done and done[0]
        recording = await eventually(finished, 10, "the recording to finish")
    finally:
        await anchor.close()
    assert 4 <= recording["duration_s"] <= 8, recording

    status, media = await call("GET", f"{sig_b.url}/api/v1/recordings/{recording['id']}",
                               viewer)  # served by a process that did not record it
    assert status == 200 and len(media) == recording["bytes"]
    path = tmp_path / "served.mp4"
    await asyncio.to_thread(path.write_bytes, media)
    out = await asyncio.to_thread(subprocess.run, [
        "ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
        str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert sorted(out.stdout.split()) == ["aac", "h264"]
