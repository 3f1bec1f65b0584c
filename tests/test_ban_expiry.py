"""Token expiry on open sockets and bans at every door that stays open (issue 14, #5).

On both store backends, against the whole app: a ``/ws/events`` socket, a ``/ws`` socket and an
``events`` data channel whose token expires are told ``token_expired`` and closed at ``exp``
(a socket with a longer token beside them keeps its events); a banned viewer's open HTTP-FLV
response ends with the ban while another viewer's keeps streaming; a banned identity's
``purchase`` is refused (``error banned``) and moves no stock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgpack
import pytest
from flv_helpers import start_anchor
from live_helpers import WsClient
from waiting import wait_for

from loadtest.clients import play
from shopcast.config import Config
from signaling.service import SIGNALING_KEY
from signaling.tokens import verify

pytest_plugins = ["store_fixtures"]

ROOM = "exp1"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def until_closed(ws: aiohttp.ClientWebSocketResponse, wait_s: float
                       ) -> tuple[list[dict[str, Any]], int | None]:
    """Every message until the server closes the socket (bounded by ``wait_s``), and the
    close code."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait_s
    for _ in range(1000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            message = await ws.receive(left)
        except TimeoutError:
            break
        if message.type == aiohttp.WSMsgType.BINARY:
            got.append(msgpack.unpackb(message.data, raw=False))
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                              aiohttp.WSMsgType.CLOSED):
            return got, ws.close_code
    return got, None


async def test_events_socket_closes_at_token_expiry(server: Any) -> None:
    started = time.monotonic()
    short = await WsClient.open(server.url, ROOM, server.token(ROOM, "brief", "subscribe", ttl=2))
    other = await WsClient.open(server.url, ROOM, server.token(ROOM, "stays", "subscribe"))
    anchor = await WsClient.open(server.url, ROOM, server.token(ROOM, "anchor", "admin"))
    try:
        assert (await short.next())["type"] == "state"
        assert (await other.next())["type"] == "state"
        assert (await anchor.next())["type"] == "state"
        got, code = await until_closed(short.ws, 3.5)
        elapsed = time.monotonic() - started
        assert code == 4001, f"closed with {code} after {elapsed:.1f} s, got {got}"
        assert elapsed <= 3.0, f"closed {elapsed:.2f} s after connecting with a 2 s token"
        assert [m["code"] for m in got if m["type"] == "error"] == ["token_expired"]
        await anchor.send(type="chat", text="still here")
        assert (await other.until("chat"))["text"] == "still here", \
            "a socket with a valid token keeps its events"
    finally:
        for client in (short, other, anchor):
            await client.close()


async def test_ws_signaling_socket_closes_at_token_expiry(server: Any) -> None:
    token = server.token(ROOM, "brief", "subscribe", ttl=2)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{server.url}/ws?token={token}") as ws:
        await ws.send_bytes(msgpack.packb({"type": "join", "room": ROOM}))
        got, code = await until_closed(ws, 3.5)
        elapsed = time.monotonic() - started
    assert [m["type"] for m in got][:2] == ["joined", "state"]
    assert code == 4001 and elapsed <= 3.0, f"close {code} after {elapsed:.2f} s"
    assert got[-1]["type"] == "error" and got[-1]["code"] == "token_expired"


@pytest.mark.slow
async def test_events_data_channel_closes_at_token_expiry(server: Any) -> None:
    anchor = await start_anchor(server, ROOM)
    viewer = await play(server.url, ROOM, server.token(ROOM, "brief", "subscribe", ttl=3),
                        decode=False, events=True)
    try:
        events = viewer.events
        assert events is not None
        await asyncio.wait_for(events.opened.wait(), 10)
        await wait_for(lambda: bool(events.of_type("state")), 5, "the join state")
        opened = time.monotonic()
        await wait_for(lambda: events.channel.readyState == "closed", 5,
                       "the events channel closed at the token's exp")
        assert time.monotonic() - opened <= 4.0
    finally:
        await viewer.close()
        await anchor.close()


async def test_a_banned_identitys_purchase_is_refused(server: Any) -> None:
    admin = server.token(ROOM, "mod", "admin")
    headers = {"Authorization": f"Bearer {admin}"}
    api = f"{server.url}/api/v1/rooms/{ROOM}"
    async with aiohttp.ClientSession() as http:
        root = {"Authorization": f"Bearer {server.token('*', 'ops', 'admin')}"}
        async with http.post(f"{server.url}/api/v1/rooms", json={"name": ROOM},
                             headers=root) as response:
            assert response.status in (200, 201), await response.text()
        async with http.post(f"{api}/products", json={"sku": "mug", "title": "Mug", "price": 500},
                             headers=headers) as response:
            assert response.status in (200, 201), await response.text()
        async with http.post(f"{api}/sales", json={"sku": "mug", "stock": 5, "duration_s": 60},
                             headers=headers) as response:
            assert response.status in (200, 201), await response.text()
        troll = await WsClient.open(server.url, ROOM,
                                    server.token(ROOM, "troll", "subscribe", "chat"))
        fan = await WsClient.open(server.url, ROOM, server.token(ROOM, "fan", "subscribe"))
        try:
            await troll.next()
            await fan.next()
            async with http.post(f"{api}/chat/ban", json={"identity": "troll"},
                                 headers=headers) as response:
                assert response.status == 200
            # the socket is kicked by the ban; a purchase that races it, or comes over another
            # transport with the same token, is refused by the gateway itself
            live = server.app[SIGNALING_KEY].live
            claims = verify(server.config.secret, server.token(ROOM, "troll", "subscribe"))
            (reply,) = [msgpack.unpackb(r, raw=False) for r in await live.handle(
                ROOM, claims, msgpack.packb({"type": "purchase", "sku": "mug", "cid": "c1"}))]
            assert reply["type"] == "error" and reply["code"] == "banned"
            assert reply.get("cid") == "c1"
            await fan.send(type="purchase", sku="mug", key="k-fan")
            order = await fan.until("order")
            assert order["order"]["buyer"] == "fan"
            sale = await live.sales.current(ROOM)
            assert sale is not None and sale["remaining"] == 4, "only the fan's unit sold"
            assert [o["buyer"] for o in await live.sales.orders(ROOM)] == ["fan"]
        finally:
            await troll.close()
            await fan.close()


@pytest.mark.slow
async def test_a_banned_viewers_open_flv_response_ends(server: Any) -> None:
    room = "ban2"
    anchor = await start_anchor(server, room)
    admin = server.token(room, "mod", "admin")
    try:
        async with aiohttp.ClientSession() as http:
            troll = await http.get(server.flv_url(room, "troll"))
            fan = await http.get(server.flv_url(room, "fan"))
            try:
                assert troll.status == 200 and fan.status == 200
                assert await troll.content.read(3) == b"FLV"
                assert await fan.content.read(3) == b"FLV"
                async with http.post(f"{server.url}/api/v1/rooms/{room}/chat/ban",
                                     json={"identity": "troll"},
                                     headers={"Authorization": f"Bearer {admin}"}) as response:
                    assert response.status == 200
                banned_at = time.monotonic()

                async def drain() -> int:
                    total = 0
                    for _ in range(100_000):
                        chunk = await troll.content.read(65536)
                        if not chunk:
                            return total
                        total += len(chunk)
                    return total

                await asyncio.wait_for(drain(), 2.0)  # EOF: the response ended
                assert time.monotonic() - banned_at <= 2.0
                # the fan keeps receiving: bytes keep arriving after the ban
                got = 0
                deadline = time.monotonic() + 1.5
                while got < 2000 and time.monotonic() < deadline:
                    got += len(await asyncio.wait_for(fan.content.read(4096), 2.0))
                assert got >= 2000, "the other viewer's FLV keeps streaming"
                assert not fan.content.at_eof()
            finally:
                troll.close()
                fan.close()
    finally:
        await anchor.close()
