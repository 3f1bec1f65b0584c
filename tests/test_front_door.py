"""The signaling front door forwards WHIP/WHEP to the room's node, for clients that only ever
talk to the one URL they were given and never re-send ``Authorization`` after a redirect.

In process, against real Redis: stub nodes show what crosses the proxy (headers, ``Location``
rewrite, one followed ``307``, size and time limits, the forward counter), a registered node
that does not answer gives ``503`` + ``Retry-After`` and the room moves once its heartbeat
lapses, bad input is refused before a room is placed. Real aiortc clients through two signaling
processes to a real node: ``tests/test_front_door_processes.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import TEST_SECRET, free_port
from multidict import CIMultiDict
from test_multinode import eventually

from shopcast.cluster import create_signaling_app
from shopcast.config import Config
from signaling.front_door import FORWARDER_KEY
from signaling.nodes import NodeAgent
from signaling.service import SIGNALING_KEY, Signaling
from signaling.store import NodeRecord
from signaling.tokens import mint

SECRET = TEST_SECRET  # the conftest config's
NODE_TTL_MS = 1500  # short, yet a loaded machine does not miss a beat by mistake
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def token(room: str, identity: str, *grants: str) -> str:
    return mint(SECRET, room=room, identity=identity, grants=list(grants))


def sdp_headers(bearer: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/sdp"}
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return headers


async def raw(method: str, url: str, **kw: Any) -> tuple[int, CIMultiDict[str], bytes]:
    """One request, never following a redirect; the headers with repeats joined by ``|``."""
    async with aiohttp.ClientSession() as http, http.request(
        method, url, allow_redirects=False, **kw
    ) as response:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in response.headers.items():
            headers[name] = f"{headers[name]}|{value}" if name in headers else value
        return response.status, headers, await response.read()


async def forwards(url: str) -> dict[str, int]:
    """The front door's non-zero ``shopcast_front_door_forwards_total`` by result."""
    _, _, text = await raw("GET", url + "/metrics")
    counts = {}
    for line in text.decode().splitlines():
        if line.startswith("shopcast_front_door_forwards_total{"):
            result, value = line.split('"')[1], int(line.rsplit(" ", 1)[1])
            if value:
                counts[result] = value
    return counts


def error_code(body: bytes) -> str:
    import json

    code: str = json.loads(body)["error"]["code"]
    return code


# --- in process: a signaling app and stub nodes ---------------------------------------------


@pytest.fixture
def config(config: Config, redis_server: str) -> Config:
    config.redis = redis_server
    config.redis_prefix = f"fd{os.getpid()}{time.monotonic_ns()}"
    return config


@pytest_asyncio.fixture
async def front(config: Config) -> AsyncIterator[tuple[str, web.Application]]:
    """A ``shopcast signaling`` app (no media) on a free port, forwarding with short limits."""
    app = create_signaling_app(config)
    app[FORWARDER_KEY].timeout = aiohttp.ClientTimeout(total=1.0, sock_connect=0.5)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield f"http://{config.host}:{config.port}", app
    finally:
        await runner.cleanup()


async def agent(signaling: Signaling, node_id: str, url: str, **load: Any) -> NodeAgent:
    node = NodeAgent(signaling.store, lambda: NodeRecord(node_id, url, **load),
                     bus=signaling.bus, interval_s=0.1, ttl_ms=NODE_TTL_MS)
    await node.start()
    return node


class StubNode:
    """An HTTP server that answers like a node and records what reached it."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.handler = handler
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[tuple[str, str, CIMultiDict[str], bytes]] = []
        self._runner: web.AppRunner | None = None

    async def _record(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, CIMultiDict(request.headers),
                          await request.read()))
        return await self.handler(request)

    async def __aenter__(self) -> StubNode:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def answer(location: str) -> web.Response:
    response = web.Response(status=201, body=b"v=0 answer", content_type="application/sdp",
                            headers={"Location": location, "ETag": '"abc"',
                                     "Access-Control-Allow-Origin": "http://node.example",
                                     "Set-Cookie": "node=1", "X-Node-Private": "1"})
    response.headers.add("Link", '<stun:127.0.0.1:3478>; rel="ice-server"')
    response.headers.add("Link", '<turn:127.0.0.1:3478>; rel="ice-server"')
    return response


async def test_whip_whep_and_delete_cross_the_proxy(front: tuple[str, web.Application]) -> None:
    url, app = front
    signaling = app[SIGNALING_KEY]

    async def node(request: web.Request) -> web.StreamResponse:
        if request.method == "DELETE":
            return web.Response(status=204)
        return answer(f"{stub.url}{request.path}/abc")  # absolute, on the node's origin

    async with StubNode(node) as stub:
        n1 = await agent(signaling, "n1", stub.url)
        try:
            publish_token = token("r1", "anchor", "publish")
            headers = {**sdp_headers(publish_token), "X-Forwarded-For": "10.0.0.9",
                       "Cookie": "session=1", "Keep-Alive": "timeout=5", "X-Private": "1",
                       "Origin": "http://shop.example"}
            status, got, body = await raw("POST", url + "/whip/r1", data=OFFER, headers=headers)
            assert status == 201 and body == b"v=0 answer"
            assert got["Location"] == "/whip/r1/abc"  # on the front door, not the node
            assert got["ETag"] == '"abc"' and got["Content-Type"] == "application/sdp"
            assert got["Link"].count("rel=\"ice-server\"") == 2
            assert "Set-Cookie" not in got and "X-Node-Private" not in got
            assert got["Access-Control-Allow-Origin"] == "http://shop.example"
            assert "Location" in got["Access-Control-Expose-Headers"]
            method, path, sent, offer = stub.seen[-1]
            assert (method, path, offer) == ("POST", "/whip/r1", OFFER.encode())
            assert sent["Authorization"] == f"Bearer {publish_token}"  # the client's own
            assert sent["X-Forwarded-For"] == "10.0.0.9, 127.0.0.1"
            assert sent["Forwarded"].startswith("for=127.0.0.1;")
            assert sent["Host"] == f"127.0.0.1:{stub.port}"
            for private in ("Cookie", "Keep-Alive", "X-Private", "Origin"):
                assert private not in sent, private
            room = await signaling.store.get_room("r1")
            assert room is not None and room.node == "n1"

            watch = sdp_headers(token("r1", "viewer", "subscribe"))
            status, got, _ = await raw("POST", url + "/whep/r1?x=1", data=OFFER, headers=watch)
            assert status == 201 and got["Location"] == "/whep/r1/abc"
            assert stub.seen[-1][1] == "/whep/r1?x=1"  # the query goes along

            status, _, _ = await raw("DELETE", url + "/whip/r1/abc", headers={
                "Authorization": f"Bearer {publish_token}"})
            assert status == 204 and stub.seen[-1][:2] == ("DELETE", "/whip/r1/abc")
            assert stub.seen[-1][2]["Authorization"] == f"Bearer {publish_token}"
            status, got, body = await raw("OPTIONS", url + "/whip/r1", headers={
                "Origin": "http://shop.example", "Access-Control-Request-Method": "POST"})
            assert status == 204 and "Authorization" in got["Access-Control-Allow-Headers"]
            assert await forwards(url) == {"answered": 3}
        finally:
            await n1.close()


async def test_a_moved_room_is_followed_once(front: tuple[str, web.Application]) -> None:
    url, app = front
    signaling = app[SIGNALING_KEY]

    async def new_owner(request: web.Request) -> web.StreamResponse:
        return answer(f"{request.path}/new")

    async with StubNode(new_owner) as target:
        async def old_owner(request: web.Request) -> web.StreamResponse:
            if request.match_info["tail"].startswith("whip/loop"):
                return web.Response(status=307, headers={"Location": stub.url + request.path})
            return web.Response(status=307, headers={"Location": target.url + request.path})

        async with StubNode(old_owner) as stub:
            n1 = await agent(signaling, "n1", stub.url)
            try:
                headers = sdp_headers(token("moved", "anchor", "publish"))
                status, got, _ = await raw("POST", url + "/whip/moved", data=OFFER,
                                           headers=headers)
                assert status == 201 and got["Location"] == "/whip/moved/new"
                assert [s[1] for s in target.seen] == ["/whip/moved"]
                assert target.seen[0][2]["Authorization"] == headers["Authorization"]

                headers = sdp_headers(token("loop", "anchor", "publish"))
                status, got, body = await raw("POST", url + "/whip/loop", data=OFFER,
                                              headers=headers)
                assert status == 502 and error_code(body) == "node_redirect_loop"
                assert got["Retry-After"] == "5" and len(stub.seen) == 3  # 1 + 2, no more
                assert await forwards(url) == {"answered": 1, "node_redirect_loop": 1}
            finally:
                await n1.close()


async def test_a_node_that_does_not_answer_gives_502_or_503(
    front: tuple[str, web.Application],
) -> None:
    url, app = front
    signaling = app[SIGNALING_KEY]
    publish_token = token("shop", "anchor", "publish")

    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)  # longer than the front door's 1 s limit
        return web.Response(status=201)

    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(status=201, body=b"x" * ((1 << 20) + 1))

    for handler, code in ((hang, "node_timeout"), (huge, "bad_gateway")):
        async with StubNode(handler) as stub:
            node = await agent(signaling, "slow", stub.url)
            try:
                started = time.monotonic()
                status, got, body = await raw("POST", f"{url}/whip/{code}", data=OFFER,
                                              headers=sdp_headers(token(code, "a", "publish")))
                assert (status, error_code(body)) == (502, code)
                assert got["Retry-After"] == "5" and time.monotonic() - started < 3
            finally:
                await node.close()

    # placed on a node that died before the forward: nothing listens on its port any more
    dead_url = f"http://127.0.0.1:{free_port()}"
    dying = await agent(signaling, "dying", dead_url)
    status, got, body = await raw("POST", url + "/whip/shop", data=OFFER,
                                  headers=sdp_headers(publish_token))
    assert (status, error_code(body)) == (503, "node_unavailable")
    assert got["Retry-After"] == "5" and got["Content-Type"].startswith("application/json")
    room = await signaling.store.get_room("shop")
    assert room is not None and room.node == "dying"  # the claim waits for the heartbeat
    status, _, body = await raw("DELETE", url + "/whip/shop/abc", headers={
        "Authorization": f"Bearer {publish_token}"})
    assert (status, error_code(body)) == (503, "node_unavailable")
    assert await forwards(url) == {"node_timeout": 1, "bad_gateway": 1, "node_unavailable": 2}

    async def survivor_handler(request: web.Request) -> web.StreamResponse:
        return answer(f"{request.path}/s")

    async with StubNode(survivor_handler) as survivor:
        alive = await agent(signaling, "survivor", survivor.url, viewers=50)  # less attractive
        try:
            assert dying._task is not None
            dying._task.cancel()  # stops heartbeating without deregistering

            async def moved() -> bool:
                status, _, _ = await raw("POST", url + "/whip/shop", data=OFFER,
                                         headers=sdp_headers(publish_token))
                return status == 201

            await eventually(moved, NODE_TTL_MS / 1000 + 3, "the room re-placed once the "
                             "heartbeat lapsed")
            room = await signaling.store.get_room("shop")
            assert room is not None and room.node == "survivor"
        finally:
            await alive.close()


async def test_bad_input_places_no_room(front: tuple[str, web.Application]) -> None:
    url, app = front
    signaling = app[SIGNALING_KEY]

    async def never(request: web.Request) -> web.StreamResponse:
        raise AssertionError("bad input reached the node")

    async with StubNode(never) as stub:
        n1 = await agent(signaling, "n1", stub.url)
        try:
            cases = [
                ("/whip/r", sdp_headers(None), OFFER, 401, "missing_token"),
                ("/whip/r", sdp_headers("not-a-jwt"), OFFER, 401, "invalid_token"),
                ("/whip/r", sdp_headers(token("r", "v", "subscribe")), OFFER, 403,
                 "missing_grant"),
                ("/whip/r", sdp_headers(token("other", "a", "publish")), OFFER, 403,
                 "wrong_room"),
                ("/whip/r", sdp_headers(mint("wrong-secret", room="r", identity="a",
                                             grants=["publish"])), OFFER, 401, "invalid_token"),
                ("/whip/bad%20room", sdp_headers(token("*", "a", "admin")), OFFER, 400,
                 "bad_room"),
                ("/whip/r", {**sdp_headers(token("r", "a", "publish")),
                             "Content-Type": "text/plain"}, OFFER, 415,
                 "unsupported_media_type"),
                ("/whip/r", sdp_headers(token("r", "a", "publish")),
                 "v=0\r\n" + "a=x\r\n" * 300_000, 413, "request_entity_too_large"),
                ("/whep/r", sdp_headers(token("r", "v", "chat")), OFFER, 403, "missing_grant"),
                ("/whep/r", sdp_headers(token("r", "v", "subscribe")), OFFER, 404, "not_live"),
            ]
            for path, headers, body, status, code in cases:
                got_status, got, got_body = await raw("POST", url + path, data=body,
                                                      headers=headers)
                assert (got_status, error_code(got_body)) == (status, code), path
                assert got["Content-Type"].startswith("application/json")
            status, _, body = await raw("DELETE", url + "/whip/r/abc")
            assert (status, error_code(body)) == (404, "not_found")  # no owner, nothing to end
            assert await signaling.store.get_room("r") is None
            assert await signaling.store.list_rooms() == []
            assert stub.seen == [] and await forwards(url) == {}
        finally:
            await n1.close()
