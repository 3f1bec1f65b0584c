"""Compliance snapshots (issue 15, part 2), against the whole app on both store backends: with
``--snapshot-interval-s 1`` a painted aiortc anchor's room sends a signed ``snapshot`` webhook
every second (within 1 s) for 5 s, each with a JPEG whose pixels are the anchor's colour
(decoded with PyAV); ``GET /api/v1/rooms/{room}/snapshot`` answers the latest JPEG to an admin
of the room, 403 to a viewer's token, 404 JSON for a room without one; the node's memory lets
an ended room's go. A VP8 anchor (whose FLV video is transcoded) and an RTMP encoder get their
snapshots too; with two signaling and two SFU processes, the front door that holds no media
serves the snapshot the room's node took.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import av
import numpy as np
import pytest
from conftest import Server, free_port, loopback_config
from rest_helpers import Api
from test_multinode import Proc, cluster  # noqa: F401 (cluster: a fixture)
from test_multinode import token as multinode_token
from test_rtmp_ingest import ffmpeg_push, pushing, rtmp_url
from test_webhooks import Receiver, receiver  # noqa: F401 (receiver: a fixture)
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import NAMED_COLOURS, PaintedVideoTrack, ToneAudioTrack
from sfu.settings import SnapshotSettings
from sfu.snapshots import SNAPSHOTS_KEY, RoomSnapshots, Snapshot
from shopcast.config import Config
from signaling.webhooks import SIGNATURE_HEADER, verify

pytest_plugins = ["store_fixtures"]
pytestmark = pytest.mark.slow

ROOM = "look1"
HOOK_KEY = "snapshot-hook-key"
WATCH_S = 5.0
COLOUR_TOLERANCE = 40


@pytest.fixture
def config(tmp_path: Path, backend: str, prefix: str,
           receiver: Receiver) -> Config:  # noqa: F811 (the fixture)
    config = loopback_config(tmp_path, workers=0, rtmp_port=free_port())
    config.redis = backend
    config.redis_prefix = prefix
    config.webhook_urls = [receiver.url]
    config.webhook_secret = HOOK_KEY
    config.snapshot_interval_s = 1
    return config


def snapshots(hooks: Receiver) -> list[dict[str, Any]]:
    """The verified ``snapshot`` webhooks so far (a bad signature fails the test)."""
    found = []
    for body, headers in hooks.posts:
        payload = json.loads(body)
        if payload["event"] != "snapshot":
            continue
        assert verify(HOOK_KEY, body, headers[SIGNATURE_HEADER]), "unsigned snapshot webhook"
        found.append(payload)
    return found


def centre_rgb(jpeg: bytes) -> tuple[float, float, float]:
    """The mean colour of the picture's middle (the painted time strip is at the top)."""
    with av.open(io.BytesIO(jpeg), "r") as container:
        frame = next(container.decode(video=0))
    pixels = frame.to_ndarray(format="rgb24")
    h, w = pixels.shape[:2]
    middle = pixels[h // 3: 2 * h // 3, w // 4: 3 * w // 4].reshape(-1, 3)
    r, g, b = (float(c) for c in np.mean(middle, axis=0))
    return r, g, b


def assert_colour(jpeg: bytes, colour: str) -> None:
    got = centre_rgb(jpeg)
    want = NAMED_COLOURS[colour]
    assert all(abs(a - b) <= COLOUR_TOLERANCE for a, b in zip(got, want, strict=True)), \
        f"snapshot colour {got} is not {colour} {want}"


async def watch(hooks: Receiver, room: str) -> list[dict[str, Any]]:
    """The room's snapshot webhooks from the first one for ``WATCH_S`` seconds."""
    await wait_for(lambda: any(s["room"]["name"] == room for s in snapshots(hooks)), 15,
                   f"the first snapshot of {room}")
    await asyncio.sleep(WATCH_S)
    return [s["snapshot"] for s in snapshots(hooks) if s["room"]["name"] == room]


async def test_snapshot_webhooks_every_interval_show_the_anchor(
        server: Server, receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    anchor = await publish(server.url, ROOM, server.token(ROOM, "anchor", "publish"),
                           PaintedVideoTrack("green", texture=False), ToneAudioTrack())
    try:
        got = await watch(receiver, ROOM)
        times = [s["taken_at"] for s in got]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        print(f"snapshots of {ROOM}: {len(got)} in {times[-1] - times[0]:.2f} s, gaps "
              + ", ".join(f"{g:.2f}" for g in gaps) + f"; JPEG {got[-1]['bytes']} bytes")
        assert len(got) >= WATCH_S, f"{len(got)} snapshots in {WATCH_S} s at one a second"
        assert all(0.0 <= gap <= 2.0 for gap in gaps), f"snapshot gaps {gaps} (1 s +- 1 s)"
        for snapshot in got:
            jpeg = base64.b64decode(snapshot["jpeg_base64"])
            assert len(jpeg) == snapshot["bytes"] and snapshot["content_type"] == "image/jpeg"
            assert (snapshot["width"], snapshot["height"]) == (640, 360)
            assert_colour(jpeg, "green")

        api = Api(server.url + "/api/v1", server.token(ROOM, "ops", "admin"))
        async with aiohttp.ClientSession() as http, http.get(
                f"{server.url}/api/v1/rooms/{ROOM}/snapshot",
                headers={"Authorization": f"Bearer {server.token(ROOM, 'ops', 'admin')}"}
        ) as response:
            assert response.status == 200 and response.content_type == "image/jpeg"
            taken_at = float(response.headers["X-Snapshot-Taken-At"])
            assert abs(taken_at - time.time()) < 3
            assert_colour(await response.read(), "green")
        status, body = await api.get(f"/rooms/{ROOM}/snapshot",
                                     token=server.token(ROOM, "fan", "subscribe"))
        assert status == 403 and body["error"]["code"] == "missing_grant"
        status, body = await api.get("/rooms/nothing/snapshot",
                                     token=server.token("nothing", "ops", "admin"))
        assert status == 404 and body["error"]["code"] == "no_snapshot"
        async with aiohttp.ClientSession() as http, \
                http.get(f"{server.url}/metrics") as response:
            metrics = await response.text()
        taken = next(line for line in metrics.splitlines()
                     if line.startswith('shopcast_snapshots_total{result="taken"}'))
        assert int(taken.split()[-1]) >= len(got)
    finally:
        await anchor.close()
    kept = server.app[SNAPSHOTS_KEY]  # the node's memory lets an ended room's pictures go
    await wait_for(lambda: ROOM not in kept.rooms, 5, "the ended room's snapshots dropped")


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_a_vp8_anchor_and_an_rtmp_encoder_get_snapshots(
        server: Server, receiver: Receiver) -> None:  # noqa: F811 (the fixture)
    vp8 = await publish(server.url, "look2", server.token("look2", "anchor", "publish"),
                        PaintedVideoTrack("magenta", texture=False), ToneAudioTrack(),
                        prefer="VP8")
    try:
        await wait_for(lambda: any(s["room"]["name"] == "look2" for s in snapshots(receiver)),
                       15, "a snapshot of the VP8 anchor's room")
        first = next(s for s in snapshots(receiver) if s["room"]["name"] == "look2")
        assert_colour(base64.b64decode(first["snapshot"]["jpeg_base64"]), "magenta")
    finally:
        await vp8.close()
    url = rtmp_url(server, "look3", server.token("look3", "anchor", "publish"))
    with pushing(ffmpeg_push(url, seconds=20)):
        await wait_for(lambda: any(s["room"]["name"] == "look3" for s in snapshots(receiver)),
                       15, "a snapshot of the RTMP encoder's room")
        first = next(s for s in snapshots(receiver) if s["room"]["name"] == "look3")
        assert first["snapshot"]["width"] == 320 and first["snapshot"]["bytes"] > 0


async def test_a_late_round_is_one_round_not_a_burst_of_the_missed_ones() -> None:
    """Rounds every 0.1 s, the first taking 1 s (a slow round, a stalled loop): the rounds
    after it keep the interval instead of catching up on the ten missed, back to back (each
    round is a webhook per room)."""
    rounds: list[float] = []

    async def take_all() -> list[Snapshot]:
        rounds.append(time.monotonic())
        if len(rounds) == 1:
            await asyncio.sleep(1.0)
        return []

    taker = RoomSnapshots(cast(Any, SimpleNamespace(outputs={})), SnapshotSettings(0.1))
    taker.take_all = take_all  # type: ignore[method-assign]
    await taker.start()
    try:
        await wait_for(lambda: len(rounds) >= 6, 5, "six rounds")
    finally:
        await taker.close()
    gaps = [b - a for a, b in itertools.pairwise(rounds[2:])]
    assert min(gaps) >= 0.05, f"rounds after the slow one came in a burst: gaps {gaps}"


@pytest.fixture
def one_second_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cluster's processes read it from the environment (asked for before ``cluster``)."""
    monkeypatch.setenv("SHOPCAST_SNAPSHOT_INTERVAL_S", "1")


@pytest.mark.timeout(180)
async def test_any_front_door_serves_the_snapshot_the_node_took(
        one_second_snapshots: None, cluster: dict[str, Proc]) -> None:  # noqa: F811
    """Two signaling and two SFU processes on one Redis: the anchor publishes through
    signaling A to its node; signaling B, which holds no media, answers the snapshot the
    node took (it is in the store)."""
    anchor = await publish(cluster["sig-a"].url, "look4",
                           multinode_token("look4", "anchor", "publish"),
                           PaintedVideoTrack("blue", texture=False), ToneAudioTrack())
    url = f"{cluster['sig-b'].url}/api/v1/rooms/look4/snapshot"
    headers = {"Authorization": f"Bearer {multinode_token('look4', 'ops', 'admin')}"}
    try:
        async def fetch() -> bytes | None:
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
                return await r.read() if r.status == 200 else None

        jpeg = None
        deadline = time.monotonic() + 20
        for _ in range(40):  # bounded in count and in time
            jpeg = await fetch()
            if jpeg is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        assert jpeg is not None, "no snapshot through the other front door within 20 s"
        assert_colour(jpeg, "blue")
    finally:
        await anchor.close()
