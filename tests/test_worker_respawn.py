"""A worker process that dies (kill -9) is replaced, and nobody is left hanging: the viewers it
held end as sessions (the node and the participants API drop them, so their pages re-join),
the room's producers feed the replacement as viewers arrive, and /healthz says degraded while
no worker can take viewers. Real worker processes, real aiortc peers; both store backends."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import loopback_config
from rest_helpers import Api
from waiting import wait_for

from loadtest.clients import Viewer, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from sfu.worker_pool import WorkerPool
from shopcast.config import Config

pytest_plugins = ["store_fixtures"]
pytestmark = pytest.mark.slow

ROOM = "shop"
RESPAWN_LIMIT_S = 5.0  # the pool is whole again within this after a kill
PLAY_LIMIT_S = 10.0  # a new viewer decodes frames within this after a kill


@pytest.fixture
def config(tmp_path: Path, backend: str, prefix: str) -> Config:
    return loopback_config(tmp_path, workers=2, redis=backend, redis_prefix=prefix)


async def healthz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as resp:
        return resp.status, await resp.json()


async def identities(admin: Api) -> set[str]:
    status, body = await admin.get(f"/api/v1/rooms/{ROOM}/participants")
    assert status == 200, body
    return {p["identity"] for p in body["participants"]}


async def eventually_identities(admin: Api, want: Any, limit_s: float, what: str) -> set[str]:
    deadline = time.monotonic() + limit_s
    while True:
        found = await identities(admin)
        if want(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}: {found}")
        await asyncio.sleep(0.1)


def kill(pool: WorkerPool, index: int) -> int:
    pid = pool.workers[index].process.pid
    os.kill(pid, signal.SIGKILL)
    return pid


async def test_a_killed_worker_is_replaced_and_its_viewers_end(server: Any) -> None:
    node = server.app[NODE_KEY]
    pool = node.workers
    assert pool is not None and pool.live == 2
    admin = Api(server.url, server.token(ROOM, "boss", "admin"))
    anchor = await publish(server.url, ROOM, server.token(ROOM, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack(), prefer="H264")
    viewers: list[Viewer] = []
    try:
        await wait_for(lambda: ROOM in node.rooms and node.rooms[ROOM].live, 10, "live")
        for i in range(3):  # least loaded first: worker 0 gets viewers 0 and 2, worker 1 one
            viewers.append(await play(server.url, ROOM, server.token(
                ROOM, f"viewer-{i}", "subscribe"), decode=False))
        await wait_for(lambda: all(v.frames > 0 for v in viewers), 15, "every viewer plays")
        doomed = pool.workers[0]
        lost = {leg.identity for leg in doomed.legs.values()}
        assert len(lost) == 2, lost
        kept = {leg.identity for leg in pool.workers[1].legs.values()}
        survivor = next(v for i, v in enumerate(viewers) if f"viewer-{i}" in kept)
        await eventually_identities(admin, lambda found: lost | kept <= found, 10,
                                    "every viewer listed")

        killed_at = time.monotonic()
        kill(pool, 0)
        # the dead worker's viewers end as sessions, the others stay
        await wait_for(lambda: not any(s.identity in lost for s in node.sessions.values()),
                       RESPAWN_LIMIT_S, "the dead worker's sessions ended")
        assert all(any(s.identity == who for s in node.sessions.values()) for who in kept)
        assert not any(v.identity in lost for v in node.rooms[ROOM].viewers.values())
        found = await eventually_identities(
            admin, lambda found: not (lost & found), RESPAWN_LIMIT_S,
            "the participants API drops the dead worker's viewers")
        assert kept <= found and "anchor" in found

        # the pool is whole again, with a new process in the dead one's place
        await wait_for(lambda: pool.live == 2 and pool.workers[0] is not doomed,
                       RESPAWN_LIMIT_S, "the pool back to 2 workers")
        assert time.monotonic() - killed_at < RESPAWN_LIMIT_S
        assert doomed.process.returncode == -signal.SIGKILL
        assert pool.workers[0].process.pid != doomed.process.pid
        assert pool.respawned == 1

        # the surviving worker's viewer never stopped
        before = survivor.frames
        await wait_for(lambda: survivor.frames > before + 5, 5, "the other worker plays on")

        # a new viewer goes to the replacement (least loaded) and decodes the room's video:
        # the producers fed the new worker when it got a viewer
        newcomer = await play(server.url, ROOM, server.token(ROOM, "viewer-new", "subscribe"))
        viewers.append(newcomer)
        assert any(leg.identity == "viewer-new" for leg in pool.workers[0].legs.values())
        await wait_for(lambda: newcomer.frames >= 5,
                       max(PLAY_LIMIT_S - (time.monotonic() - killed_at), 0.1),
                       "a new viewer decodes frames within 10 s of the kill")
        assert pool.workers[0].feeds, "the replacement is fed the room's producers"
        status, body = await healthz(server.url)
        assert (status, body["status"], body["workers"]) == (
            200, "ok", {"live": 2, "configured": 2})
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await anchor.close()


async def test_healthz_is_degraded_while_no_worker_is_alive(server: Any) -> None:
    pool = server.app[NODE_KEY].workers
    assert pool is not None
    status, body = await healthz(server.url)
    assert (status, body["status"]) == (200, "ok"), body

    kill(pool, 0)
    kill(pool, 1)
    await wait_for(lambda: pool.live == 0, 5, "both workers seen dead")
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as resp:
        status, body = resp.status, await resp.json()
        retry_after = resp.headers.get("Retry-After")
    assert status == 503, body
    assert body["status"] == "degraded" and body["reason"] == "no_workers", body
    assert body["workers"] == {"live": 0, "configured": 2}
    assert retry_after is not None and int(retry_after) > 0

    await wait_for(lambda: pool.live == 2, RESPAWN_LIMIT_S, "both workers back")
    status, body = await healthz(server.url)
    assert (status, body["status"]) == (200, "ok"), body
    assert pool.respawned == 2


@pytest.mark.browser
@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_the_viewer_page_plays_again_after_its_worker_is_killed(
    server: Any, chromium: Any
) -> None:
    """The page, whose worker died without a word (no DTLS close from a killed process),
    sees its connection drop, re-joins on its own and plays again within 10 s."""
    from test_browser import go_live, open_viewer, wait_frames, wait_state

    errors: list[str] = []
    node = server.app[NODE_KEY]
    pool = node.workers
    await go_live(server, chromium, ROOM, errors)
    viewer = await open_viewer(server, chromium, ROOM, errors)
    await wait_frames(viewer, minimum=10)
    await wait_state(viewer, "playing", timeout_s=5)

    def page_sessions() -> set[str]:  # the anchor's page watches the stage over WHEP too
        return {s.id for s in node.sessions.values()
                if s.role == "viewer" and s.identity == "viewer"}

    before = page_sessions()
    assert len(before) == 1, before
    index = next(w.index for w in pool.workers if before & set(w.legs))
    await viewer.evaluate("window.shopcast.pc.killedWorker = true")  # the connection to lose

    killed_at = time.monotonic()
    kill(pool, index)
    await wait_for(lambda: page_sessions() - before, PLAY_LIMIT_S,
                   "the page re-joined with a new WHEP session")
    new_pc = "window.shopcast.pc !== null && !window.shopcast.pc.killedWorker"
    await viewer.wait_for_function(new_pc, timeout=PLAY_LIMIT_S * 1000)
    await wait_frames(viewer, minimum=5,  # stats() reads the page's current connection
                      timeout_s=max(PLAY_LIMIT_S - (time.monotonic() - killed_at), 0.5))
    assert await viewer.evaluate(new_pc), "frames counted on the new connection"
    assert time.monotonic() - killed_at < PLAY_LIMIT_S
    assert await viewer.text_content("#state") == "playing"
    assert await viewer.text_content("#transport") == "webrtc"
    assert errors == []
