"""Redis outages and data loss (issue 14 #4), on a redis-server this module starts, kills with
SIGKILL and starts again: from its AOF (nothing lost), or empty (everything lost).

- During an outage every door that touches the store answers JSON ``503 store_unavailable``
  with ``Retry-After`` (REST, WHEP, FLV, ``/ws/events``), logged once, while media flows on.
- Restarted from its AOF: every confirmed order and the running sale are still there.
- Restarted empty (``--allow-volatile-redis``): the node records its room and sessions again,
  so ``GET /rooms/{room}`` answers within seconds; a connected ``/ws/events`` client is told
  ``resync`` (a new seq epoch), takes a fresh ``state`` and then gets every later event.
- A Redis that persists nothing is refused at startup unless the flag allows it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio
from conftest import Server, free_port
from flv_helpers import start_anchor
from live_helpers import WsClient, pack, unpack
from rest_helpers import Api
from waiting import wait_for

from loadtest.clients import SignalingError, Viewer, play
from shopcast.config import Config

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext
    from redis_restart import RedisProcess


pytest_plugins = ["store_fixtures", "redis_restart"]

ROOM = "show"
OUTAGE_LOGGER = "shopcast.signaling.store"


@pytest.fixture
def config(config: Config, redis_proc: RedisProcess) -> Config:
    config.redis = redis_proc.url
    config.allow_volatile_redis = not redis_proc.appendonly
    return config


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def refused_503(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> None:
    """``url`` answers the outage's JSON 503 with Retry-After."""
    async with http.request(method, url, **kw) as response:
        body = await response.text()
        assert response.status == 503, (method, url, response.status, body)
        assert response.content_type == "application/json", (url, body)
        assert (await response.json())["error"]["code"] == "store_unavailable", body
        assert int(response.headers["Retry-After"]) >= 1


async def until_answer(api: Api, path: str, limit_s: float,
                       wanted: Callable[[Any], bool] = lambda body: True) -> Any:
    """The body of ``GET path`` once it is 200 and ``wanted``; fails after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    seen: tuple[int, Any] = (0, None)
    while time.monotonic() < deadline:
        seen = await api.get(path)
        if seen[0] == 200 and wanted(seen[1]):
            return seen[1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"GET {path} answered {seen} for {limit_s} s")


def api(server: Server, identity: str, *grants: str) -> Api:
    return Api(server.url, server.token(ROOM, identity, *grants))


async def open_sale(server: Server, buyers: int) -> list[dict[str, Any]]:
    """A product, a flash sale of 50 and one confirmed order per buyer (key ``k<i>``)."""
    admin = api(server, "anchor", "admin")
    base = f"/api/v1/rooms/{ROOM}"
    product = {"sku": "tee", "title": "T-shirt", "price": 1999, "currency": "EUR",
               "image_url": "https://cdn.example/tee.png"}
    assert (await admin.post(base + "/products", product))[0] == 201
    status, _ = await admin.post(base + "/sales", {"sku": "tee", "stock": 50,
                                                   "per_user_limit": 2, "duration_s": 600})
    assert status == 201
    orders = []
    for i in range(buyers):
        status, order = await api(server, f"buyer{i}", "subscribe").post(
            base + "/orders", {"sku": "tee", "qty": 1}, headers={"Idempotency-Key": f"k{i}"})
        assert status == 201, order
        orders.append(order)
    return orders


async def metrics(http: aiohttp.ClientSession, server: Server) -> str:
    async with http.get(server.url + "/metrics") as response:
        assert response.status == 200
        return await response.text()


async def frames_grow(viewer: Viewer, limit_s: float = 5.0) -> None:
    before = viewer.frames
    await wait_for(lambda: viewer.frames > before + 10, limit_s, "video frames still arriving")


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_an_aof_restart_keeps_every_order_and_the_sale_and_the_outage_is_a_json_503(
    server: Server, redis_proc: RedisProcess, http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    anchor = await start_anchor(server, ROOM)
    viewer = await play(server.url, ROOM, server.token(ROOM, "watcher", "subscribe"),
                        decode=False)
    try:
        assert await viewer.wait_connected()
        await frames_grow(viewer)
        admin = api(server, "anchor", "admin")
        orders = await open_sale(server, buyers=12)
        base = f"/api/v1/rooms/{ROOM}"
        sale_before = (await admin.get(base + "/sales"))[1]["sale"]
        assert sale_before["remaining"] == 50 - 12

        redis_proc.kill()
        viewer_token = server.token(ROOM, "late", "subscribe")
        auth = {"Authorization": f"Bearer {server.token(ROOM, 'anchor', 'admin')}"}
        for _ in range(3):  # many requests, one log line
            await refused_503(http, "GET", server.url + base, headers=auth)
            await refused_503(http, "GET", server.url + base + "/orders", headers=auth)
            await refused_503(http, "POST", server.url + base + "/orders",
                              json={"sku": "tee"}, headers={
                                  "Authorization": f"Bearer {viewer_token}",
                                  "Idempotency-Key": "during"})
        await refused_503(http, "GET", f"{server.url}/ws/events/{ROOM}?token={viewer_token}")
        async with http.ws_connect(f"{server.url}/ws?token={viewer_token}") as ws:
            await ws.send_bytes(pack({"type": "join", "room": ROOM, "cid": "j"}))
            refusal = unpack((await ws.receive(timeout=5)).data)
            assert (refusal["type"], refusal["code"]) == ("error", "store_unavailable")
        with pytest.raises(SignalingError) as whep:  # the WHEP door's ban check needs Redis
            await play(server.url, ROOM, viewer_token, decode=False)
        assert (whep.value.status, whep.value.code) == (503, "store_unavailable")
        await refused_503(http, "GET", f"{server.url}/live/{ROOM}.flv",
                          headers={"Authorization": f"Bearer {viewer_token}"})
        await frames_grow(viewer)  # media does not need Redis
        assert "shopcast_store_up 0" in await metrics(http, server)  # /metrics still answers

        redis_proc.start()  # from its AOF
        await until_answer(admin, base, 10.0)
        assert (await admin.get(base + "/orders"))[1]["orders"] == orders
        sale_after = (await admin.get(base + "/sales"))[1]["sale"]
        assert sale_after["id"] == sale_before["id"]
        assert sale_after["remaining"] == sale_before["remaining"]
        # the sale still sells, and still knows who bought what
        assert await api(server, "buyer0", "subscribe").post(
            base + "/orders", {"sku": "tee", "qty": 1}, headers={"Idempotency-Key": "k0"}
        ) == (200, orders[0])
        status, order = await api(server, "buyer0", "subscribe").post(
            base + "/orders", {"sku": "tee", "qty": 1}, headers={"Idempotency-Key": "k0b"})
        assert status == 201 and order["id"] not in {o["id"] for o in orders}
        status, body = await api(server, "buyer0", "subscribe").post(
            base + "/orders", {"sku": "tee", "qty": 1}, headers={"Idempotency-Key": "k0c"})
        assert (status, body["error"]["code"]) == (409, "limit_reached")  # 2 per buyer held
        await frames_grow(viewer)
        figures = await metrics(http, server)
        assert "shopcast_store_up 1" in figures and "shopcast_store_outages_total 1" in figures
        assert "shopcast_store_data_losses_total 0" in figures  # the AOF kept everything
    finally:
        await viewer.close()
        await anchor.close()
    down = [r for r in caplog.records
            if r.name == OUTAGE_LOGGER and "unreachable" in r.getMessage()]
    assert len(down) == 1, [r.getMessage() for r in down]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("redis_proc", ["volatile"], indirect=True)
async def test_an_empty_restart_is_repaired_and_clients_resync(
    server: Server, redis_proc: RedisProcess, http: aiohttp.ClientSession,
) -> None:
    anchor = await start_anchor(server, ROOM)
    viewer = await play(server.url, ROOM, server.token(ROOM, "watcher", "subscribe"),
                        decode=False)
    host = await WsClient.open(server.url, ROOM, server.token(ROOM, "anchor", "admin"))
    watcher = await WsClient.open(server.url, ROOM, server.token(ROOM, "fan", "subscribe"))
    try:
        assert await viewer.wait_connected()
        admin = api(server, "anchor", "admin")
        base = f"/api/v1/rooms/{ROOM}"
        state = await watcher.until("state")
        first_epoch = state["epoch"]
        assert first_epoch
        for i in range(5):
            await host.send(type="chat", text=f"before {i}")
            assert (await watcher.until("chat"))["text"] == f"before {i}"

        redis_proc.kill()
        redis_proc.wipe()
        redis_proc.start()  # empty
        # the node recorded its room and sessions again: the anchor and the WebRTC viewer
        room = await until_answer(admin, base, 5.0, lambda room: room["counts"]["viewers"] == 1)
        assert room["live"] and [p["identity"] for p in room["publishers"]] == ["anchor"]
        assert room["counts"]["by_transport"]["whep"] == 1
        assert "shopcast_store_data_losses_total 1" in await metrics(http, server)

        resync = await watcher.until("resync", 10.0)  # the viewers count is the new epoch's
        assert resync["epoch"] != first_epoch
        await watcher.send(type="resume", after_seq=state["seq"] + 5, epoch=first_epoch)
        fresh = await watcher.until("state", 5.0)
        assert fresh["epoch"] == resync["epoch"]
        later = 40
        for i in range(later):
            await host.send(type="chat", text=f"after {i}")
        texts = []
        while len(texts) < later:
            event = await watcher.next(5.0)
            if event["type"] == "chat":
                assert event["seq"] > fresh["seq"]
                texts.append(event["text"])
        assert texts == [f"after {i}" for i in range(later)]
        # a client that was away meanwhile reconnects with its old seq and epoch: fresh state
        back = await WsClient.open(server.url, ROOM, server.token(ROOM, "late", "subscribe"),
                                   after_seq=state["seq"] + 5, epoch=first_epoch)
        try:
            again = await back.next()
            assert (again["type"], again["epoch"]) == ("state", resync["epoch"])
        finally:
            await back.close()
        await frames_grow(viewer)
    finally:
        await watcher.close()
        await host.close()
        await viewer.close()
        await anchor.close()


def serve(redis_url: str, *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SHOPCAST_SECRET": "volatile-test-secret-0123456789abcdef"}
    env.pop("SHOPCAST_ALLOW_VOLATILE_REDIS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "shopcast.cli", "serve", "--host", "127.0.0.1",
         "--port", str(free_port()), "--rtmp-port", "0", "--workers", "0",
         "--redis", redis_url, *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("redis_proc", ["volatile"], indirect=True)
def test_a_volatile_redis_is_refused_at_startup_unless_allowed(
    redis_proc: RedisProcess,
) -> None:
    refused = serve(redis_proc.url)
    try:
        _, err = refused.communicate(timeout=60)
    finally:
        if refused.poll() is None:
            refused.kill()
    assert refused.returncode != 0
    last = err.strip().splitlines()[-1]
    assert "--allow-volatile-redis" in last and "appendonly" in last, err

    allowed = serve(redis_proc.url, "--allow-volatile-redis")
    try:
        assert allowed.stdout is not None
        line = allowed.stdout.readline()  # blocks until it serves (or exits)
        assert "is serving on" in line, (line, allowed.poll())
    finally:
        allowed.terminate()
        try:
            allowed.wait(timeout=15)
        except subprocess.TimeoutExpired:
            allowed.kill()
            allowed.wait()



@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("redis_proc", ["volatile"], indirect=True)
async def test_after_an_empty_restart_a_node_registers_again_with_its_room(
    redis_proc: RedisProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Multi-node: an SFU node and a signaling process. Redis restarts empty; the node's
    heartbeat registers it again, its repair records its room, sessions and claim, so the
    signaling process answers for the room and routes a new viewer to the node."""
    import test_multinode as cluster

    monkeypatch.setenv("SHOPCAST_ALLOW_VOLATILE_REDIS", "1")
    procs = {name: cluster.spawn(name, role, redis_proc.url, "loss", tmp_path)
             for name, role in (("sfu-a", "sfu"), ("sig-a", "signaling"))}
    clients: list[Any] = []
    try:
        await cluster.wait_started(procs)
        front = procs["sig-a"].url
        admin = Api(front + "/api/v1", cluster.token("*", "ops", "admin"))
        clients.append(await cluster.anchor_on(front, ROOM))
        viewer, _ = await cluster.decoded_frames(front, ROOM)
        clients.append(viewer)

        redis_proc.kill()
        redis_proc.wipe()
        redis_proc.start()  # empty

        async def answered() -> Any:
            status, room = await admin.get(f"/rooms/{ROOM}")
            return room if status == 200 and room["counts"]["viewers"] == 1 else None

        room = await cluster.eventually(answered, 5, "the room recorded again")
        assert room["node"] == "sfu-a" and room["live"]
        assert [p["identity"] for p in room["publishers"]] == ["anchor"]
        assert [n["id"] for n in (await admin.get("/nodes"))[1]["nodes"]] == ["sfu-a"]
        await frames_grow(viewer)
        late, _ = await cluster.decoded_frames(front, ROOM)  # routed to the node that has the room
        clients.append(late)
    finally:
        for client in clients:
            await client.close()
        cluster.stop_all(procs)


PAGE_CLIENT = """async ([room, token]) => {
  const { RoomEvents } = await import("/static/js/room_events.js");
  window.seen = [];
  window.client = new RoomEvents(room, token, { onEvent: (e) => window.seen.push(e) });
  window.client.connect();
}"""


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(180)
@pytest.mark.parametrize("redis_proc", ["volatile"], indirect=True)
async def test_the_page_client_resyncs_after_an_empty_restart(
    server: Server, redis_proc: RedisProcess, chromium: BrowserContext,
) -> None:
    """web/js/room_events.js, as the pages use it: on ``resync`` it drops its last seq, asks
    for a fresh ``state`` and takes every later event; a reconnect then names its epoch."""
    ops = Api(server.url, server.token("*", "ops", "admin"))
    assert (await ops.post("/api/v1/rooms", {"name": ROOM}))[0] == 201
    host = await WsClient.open(server.url, ROOM, server.token(ROOM, "anchor", "admin"))
    page = await chromium.new_page()
    try:
        await page.goto(server.url + "/")
        await page.evaluate(PAGE_CLIENT, [ROOM, server.token(ROOM, "fan", "subscribe")])
        await page.wait_for_function("window.seen.some((e) => e.type === 'state')")
        first = await page.evaluate("window.client.epoch")
        for i in range(3):
            await host.send(type="chat", text=f"before {i}")
        await page.wait_for_function("window.client.lastSeq >= 3")

        redis_proc.kill()
        redis_proc.wipe()
        redis_proc.start()  # empty: the room is gone, so it is created again
        await until_answer(ops, "/api/v1/rooms", 5.0)
        assert (await ops.post("/api/v1/rooms", {"name": ROOM}))[0] == 201
        later = 10
        for i in range(later):
            await host.send(type="chat", text=f"after {i}")
        await page.wait_for_function(
            f"window.seen.filter((e) => e.type === 'chat').length >= {3 + later} && "
            "window.seen.filter((e) => e.type === 'state').length >= 2", timeout=10_000)
        seen = await page.evaluate("window.seen")
        kinds = [e["type"] for e in seen]
        assert kinds.count("resync") == 1 and kinds.count("state") == 2, kinds
        resync = seen[kinds.index("resync")]
        assert resync["epoch"] != first
        assert await page.evaluate("window.client.epoch") == resync["epoch"]
        chats = [e["text"] for e in seen if e["type"] == "chat"]
        assert chats == [f"before {i}" for i in range(3)] + [f"after {i}" for i in range(later)]
        last = max(e["seq"] for e in seen[kinds.index("resync"):] if "seq" in e)
        assert await page.evaluate("window.client.lastSeq") == last
        assert f"epoch={resync['epoch']}" in await page.evaluate("window.client.url()")
    finally:
        await page.close()
        await host.close()
