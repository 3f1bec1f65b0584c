"""Multi-node routing in one process, on both backends: placement (dead and draining owners),
drain over the bus, the signaling front door's placement and FLV 307, the nodes API and the
playback plan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import TEST_SECRET
from rest_helpers import Api

from shopcast.cluster import create_signaling_app
from shopcast.config import Config
from signaling.flv_tickets import issue
from signaling.nodes import NodeAgent
from signaling.routing import NodeReaper, RoomPlacement
from signaling.service import SIGNALING_KEY, Signaling
from signaling.store import NodeRecord, ParticipantRecord, Transport
from signaling.tokens import Claims, Grant, mint

pytest_plugins = ["store_fixtures"]

SECRET = TEST_SECRET  # the conftest config's


def token(room: str, identity: str, *grants: str) -> str:
    return mint(SECRET, room=room, identity=identity, grants=list(grants))


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


@pytest_asyncio.fixture
async def front(config: Config) -> AsyncIterator[tuple[str, Signaling]]:
    """A ``shopcast signaling`` app (no media) on a free port."""
    app = create_signaling_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield f"http://{config.host}:{config.port}", app[SIGNALING_KEY]
    finally:
        await runner.cleanup()


async def agent(signaling: Signaling, node_id: str, **load: Any) -> NodeAgent:
    node = NodeAgent(signaling.store, lambda: NodeRecord(node_id, f"http://{node_id}", **load),
                     bus=signaling.bus, interval_s=0.05, ttl_ms=300)
    await node.start()
    return node


async def join(signaling: Signaling, room: str, sid: str, node: str) -> None:
    """A publisher session reported by ``node``."""
    await signaling.rooms.session_joined(room, ParticipantRecord(
        sid=sid, identity="anchor", transport=Transport.WHIP, role="publisher", node=node))


async def raw(method: str, url: str, **kw: Any) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.request(
        method, url, allow_redirects=False, **kw
    ) as response:
        return response.status, dict(response.headers), await response.text()


async def test_front_door_redirects_to_the_rooms_node(front: tuple[str, Signaling]) -> None:
    url, signaling = front
    n1 = await agent(signaling, "n1")
    try:
        publish = {"Authorization": f"Bearer {token('r1', 'a', 'publish')}",
                   "Content-Type": "application/sdp"}
        assert (await raw("POST", url + "/whip/r1", data="v=0"))[0] == 401  # no token, no room
        assert await signaling.store.get_room("r1") is None
        status, headers, body = await raw("POST", url + "/whip/r1", data="v=0", headers=publish)
        assert status == 503 and "node_unavailable" in body  # forwarded to n1, which is no host
        assert headers["Retry-After"] == "5"
        assert (await signaling.store.get_room("r1")).node == "n1"  # type: ignore[union-attr]

        watch = {"Authorization": f"Bearer {token('r2', 'v', 'subscribe')}"}
        status, _, body = await raw("POST", url + "/whep/r2", data="v=0", headers=watch)
        assert status == 404 and "not_live" in body  # viewers never assign a room
        ticket = issue(SECRET, Claims("v", "r1", frozenset({Grant.SUBSCRIBE})), "r1")
        status, headers, _ = await raw("GET", f"{url}/live/r1.flv?ticket={ticket}")
        assert status == 307 and headers["Location"] == f"http://n1/live/r1.flv?ticket={ticket}"
        sub = token("r1", "v", "subscribe")  # a plain token only with --flv-plain-token
        status, _, body = await raw("GET", f"{url}/live/r1.flv?token={sub}")
        assert status == 401 and "ticket_required" in body
        status, _, body = await raw("DELETE", url + "/whip/r1/abc")
        assert status == 503 and "node_unavailable" in body  # forwarded too (test_front_door)
    finally:
        await n1.close()
    status, _, body = await raw("POST", url + "/whip/r3", data="v=0", headers={
        "Authorization": f"Bearer {token('r3', 'a', 'publish')}",
        "Content-Type": "application/sdp"})
    assert status == 503 and "no_node" in body


async def test_dead_owner_sessions_leave_and_the_room_moves(
    front: tuple[str, Signaling],
) -> None:
    _, signaling = front
    placement = RoomPlacement(signaling.store, signaling.rooms)
    dying, survivor = await agent(signaling, "n1"), await agent(signaling, "n2", viewers=5)
    await signaling.rooms.create("shop")  # over REST: outlives its sessions
    assert (await placement.assign("shop")).id == "n1"
    await join(signaling, "shop", "S1", "n1")
    assert dying._task is not None
    dying._task.cancel()  # dies without deregistering
    await asyncio.sleep(0.45)
    assert await placement.live_owner("shop") is None
    assert (await placement.assign("shop")).id == "n2"
    assert await signaling.store.list_participants("shop") == []  # reason node_failed
    await survivor.close()


async def test_reaper_frees_rooms_of_dead_nodes(front: tuple[str, Signaling]) -> None:
    _, signaling = front
    placement = RoomPlacement(signaling.store, signaling.rooms)
    dying = await agent(signaling, "n1")
    await signaling.rooms.create("shop")
    await placement.assign("shop")
    await join(signaling, "shop", "S1", "n1")
    assert dying._task is not None
    dying._task.cancel()
    await asyncio.sleep(0.45)
    assert await NodeReaper(placement).reap() == 1
    room = await signaling.store.get_room("shop")
    assert room is not None and room.node == ""
    assert await signaling.store.list_participants("shop") == []


async def test_drain_over_rest_and_placement(front: tuple[str, Signaling]) -> None:
    url, signaling = front
    placement = RoomPlacement(signaling.store, signaling.rooms)
    n1, n2 = await agent(signaling, "n1"), await agent(signaling, "n2", viewers=3)
    try:
        root = Api(url + "/api/v1", token("*", "ops", "admin"))
        scoped = Api(url + "/api/v1", token("r", "ops", "admin"))
        assert (await scoped.get("/nodes"))[0] == 403
        status, body = await root.get("/nodes")
        assert status == 200 and [n["id"] for n in body["nodes"]] == ["n1", "n2"]
        assert (await root.post("/nodes/nope/drain"))[0] == 404
        await signaling.rooms.create("kept")
        assert (await placement.assign("kept")).id == "n1"
        await join(signaling, "kept", "S1", "n1")
        await signaling.rooms.create("idle")
        assert (await placement.assign("idle")).id == "n1"

        status, node = await root.post("/nodes/n1/drain")
        assert status == 200 and node["draining"] is True and n1.draining
        assert (await placement.assign("new")).id == "n2"  # no new rooms on n1
        assert (await placement.assign("kept")).id == "n1"  # its live room finishes there
        assert (await placement.assign("idle")).id == "n2"  # an empty room moves off
        status, node = await root.post("/nodes/n1/drain", {"draining": False})
        assert status == 200 and node["draining"] is False
    finally:
        await n1.close()
        await n2.close()


async def test_playback_plan_whep_under_the_cap_flv_above(front: tuple[str, Signaling]) -> None:
    url, signaling = front
    load = {"viewers": 9}
    node = NodeAgent(signaling.store,
                     lambda: NodeRecord("n1", "http://n1:8443", max_viewers=10, **load),
                     interval_s=0.05, ttl_ms=300)
    await node.start()
    try:
        viewer = Api(url + "/api/v1", token("shop", "v", "subscribe"))
        assert (await viewer.get("/rooms/shop/playback"))[1]["error"]["code"] == "room_not_found"
        await signaling.rooms.create("shop")
        status, body = await viewer.get("/rooms/shop/playback")
        assert (status, body["error"]["code"]) == (404, "not_live")
        await RoomPlacement(signaling.store, signaling.rooms).assign("shop")
        status, plan = await viewer.get("/rooms/shop/playback")
        assert status == 200 and plan["transport"] == "whep"
        assert plan["url"] == plan["whep_url"] == "http://n1:8443/whep/shop"
        load["viewers"] = 10
        await asyncio.sleep(0.15)
        status, plan = await viewer.get("/rooms/shop/playback")
        assert plan["transport"] == "flv" and plan["url"] == plan["flv_url"]
        assert plan["url"].startswith("http://n1:8443/live/shop.flv?ticket=")
        assert (await Api(url + "/api/v1", token("other", "v", "subscribe")).get(
            "/rooms/shop/playback"))[0] == 403
    finally:
        await node.close()
