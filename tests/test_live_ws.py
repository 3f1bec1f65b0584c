"""/ws/events/{room} on both backends: state then live events in seq order to 50 clients,
exact resume with after_seq, errors to the sender only, chat text stays text, bans."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from live_helpers import WsClient
from rest_helpers import Api

from shopcast.config import Config

pytest_plugins = ["store_fixtures"]

ROOM = "live"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def connect(server: Any, identity: str, *grants: str, after_seq: int | None = None
                  ) -> WsClient:
    return await WsClient.open(server.url, ROOM, server.token(ROOM, identity, *grants),
                               after_seq=after_seq)


async def test_chat_reaches_50_clients_in_seq_order(server: Any) -> None:
    clients = await asyncio.gather(*(connect(server, f"v{i}", "subscribe") for i in range(50)))
    sender = await connect(server, "anchor", "admin")
    try:
        states = await asyncio.gather(*(c.next() for c in [*clients, sender]))
        assert {s["type"] for s in states} == {"state"}
        start = states[0]["seq"]
        for i in range(20):
            await sender.send(type="chat", text=f"m{i}")
        for client in [*clients, sender]:
            got = [await client.next() for _ in range(20)]
            assert [e["seq"] for e in got] == list(range(start + 1, start + 21))
            assert [e["text"] for e in got] == [f"m{i}" for i in range(20)]
    finally:
        await asyncio.gather(*(c.close() for c in [*clients, sender]))


async def test_reconnect_with_after_seq_gets_exactly_the_missed(server: Any) -> None:
    anchor = await connect(server, "anchor", "admin")
    viewer = await connect(server, "v", "subscribe")
    try:
        await anchor.next()
        await viewer.next()
        await anchor.send(type="chat", text="before")
        last = (await viewer.until("chat"))["seq"]
        await viewer.close()
        for i in range(5):
            await anchor.send(type="chat", text=f"missed {i}")
        await anchor.send(type="like", count=3)
        for _ in range(6):
            await anchor.next()
        back = await connect(server, "v", "subscribe", after_seq=last)
        missed = [await back.next() for _ in range(6)]
        assert [e["seq"] for e in missed] == list(range(last + 1, last + 7))
        assert [e.get("text") for e in missed[:5]] == [f"missed {i}" for i in range(5)]
        assert missed[5] == {"type": "likes", "total": 3, "seq": last + 6}
        with pytest.raises(TimeoutError):
            await back.next(0.3)
        await back.close()
        # a seq from the future (say, after a reset) gets a fresh state
        fresh = await connect(server, "v", "subscribe", after_seq=10_000)
        assert (await fresh.next())["type"] == "state"
        await fresh.close()
    finally:
        await anchor.close()


async def test_bad_input_is_answered_to_the_sender_only(server: Any) -> None:
    bad = await connect(server, "bad", "subscribe", "chat")
    other = await connect(server, "other", "subscribe")
    try:
        await bad.next()
        await other.next()
        await bad.ws.send_bytes(b"\xc1\xc1 not msgpack")
        assert (await bad.next())["code"] == "malformed"
        await bad.ws.send_str('{"type": "chat", "text": "json"}')
        assert (await bad.next())["code"] == "bad_frame"
        await bad.ws.send_bytes(b"\x00" * (20 * 1024))
        assert (await bad.next())["code"] == "too_large"
        await bad.send(type="purchase", sku="none")
        assert (await bad.next())["code"] == "no_sale"
        await bad.send(type="pin", sku="x")
        assert (await bad.next())["code"] == "forbidden"
        with pytest.raises(TimeoutError):
            await other.next(0.3)
        assert not bad.ws.closed
        await bad.send(type="chat", text="still here")
        assert (await other.next())["text"] == "still here"
    finally:
        await bad.close()
        await other.close()


async def test_chat_text_stays_text(server: Any) -> None:
    client = await connect(server, "x", "chat")
    try:
        await client.next()
        text = '<script>alert("x")</script><img src=x onerror=alert(1)> &amp;'
        await client.send(type="chat", text=text)
        assert (await client.until("chat"))["text"] == text
    finally:
        await client.close()


async def test_refusals_before_upgrade(server: Any) -> None:
    async with aiohttp.ClientSession() as http:
        for query, status in [("", 401), ("?token=bad", 401),
                              ("?token=" + server.token("other", "v", "subscribe"), 403),
                              ("?token=" + server.token(ROOM, "v", "publish"), 403),
                              ("?token=" + server.token(ROOM, "v", "subscribe") + "&after_seq=x",
                               400)]:
            async with http.get(f"{server.url}/ws/events/{ROOM}{query}") as response:
                assert response.status == status, query
                assert "error" in await response.json()


async def test_ban_disconnects_and_refuses_rejoin(server: Any) -> None:
    viewer = await connect(server, "troll", "subscribe", "chat")
    watcher = await connect(server, "good", "subscribe")
    try:
        await viewer.next()
        await watcher.next()
        admin = Api(server.url, server.token(ROOM, "anchor", "admin"))
        assert (await admin.post(f"/api/v1/rooms/{ROOM}/chat/ban", {"identity": "troll"}))[0] \
            == 200
        assert (await viewer.until("kicked"))["identity"] == "troll"
        closing = await viewer.ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert viewer.ws.close_code == 4003
        assert (await watcher.until("kicked"))["identity"] == "troll"
        assert not watcher.ws.closed
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await connect(server, "troll", "subscribe")
        assert refused.value.status == 403
    finally:
        await viewer.close()
        await watcher.close()
