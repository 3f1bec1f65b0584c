"""Every client event needs a grant, and likes are rate-limited per identity (issue 14, #9).

A ``chat``-only token used to buy over ``/ws/events`` (REST wants ``subscribe``) and anyone in
the room could like and gift; one identity added a million likes in 10 s. The gateway is the one
place the ``/ws/events`` socket, the ``events`` data channel and ``/ws`` hand client messages to,
so most of this runs at the gateway, on both store backends; one test goes through the real
``/ws/events`` door.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from live_helpers import ADMIN, WsClient, claims, make_gateway, send

from shopcast.config import Config
from signaling.bus import Bus, Subscription
from signaling.claims import Claims
from signaling.live import gifts, likes
from signaling.live.catalog import Product
from signaling.live.gateway import EventGateway
from signaling.live.schema import CLIENT_EVENTS
from signaling.store import Store
from signaling.tokens import Grant
from signaling.webhooks import Webhooks, WebhookSettings

pytest_plugins = ["store_fixtures"]

CHATTER = claims("chatter", Grant.CHAT)
WATCHER = claims("watcher", Grant.SUBSCRIBE)
ANCHOR = claims("anchor", Grant.PUBLISH)
NOBODY = Claims(identity="nobody", room="r", grants=frozenset())


@pytest_asyncio.fixture
async def gateway(store: Store, bus: Bus) -> AsyncIterator[EventGateway]:
    gw = make_gateway(store, bus)
    await gw.catalog.put("r", Product("tee", "T-shirt", 1500))
    try:
        yield gw
    finally:
        await gw.close()


async def quiet(sub: Subscription, wait_s: float = 0.6) -> list[Any]:
    """What the room's bus carried until it was quiet for ``wait_s`` (bounded: 200 events)."""
    got = []
    for _ in range(200):
        try:
            got.append(await asyncio.wait_for(sub.get(), wait_s))
        except TimeoutError:
            break
    return got


def test_every_client_event_names_its_grants() -> None:
    assert all(spec.grants for spec in CLIENT_EVENTS.values())
    watching = {Grant.SUBSCRIBE, Grant.PUBLISH, Grant.COHOST}
    assert set(CLIENT_EVENTS["like"].grants) == watching
    assert set(CLIENT_EVENTS["gift"].grants) == watching
    assert CLIENT_EVENTS["purchase"].grants == (Grant.SUBSCRIBE,)  # as POST /orders
    assert Grant.CHAT not in {*CLIENT_EVENTS["like"].grants, *CLIENT_EVENTS["gift"].grants}
    assert set(CLIENT_EVENTS["resume"].grants) == {*watching, Grant.CHAT}


async def test_chat_only_token_may_chat_but_not_like_gift_or_buy(
        gateway: EventGateway, bus: Bus) -> None:
    await send(gateway, ADMIN, type="start_sale", sku="tee", stock=5, duration_s=60)
    async with bus.subscribe("r") as sub:
        for message in ({"type": "like", "count": 100}, {"type": "gift", "gift": "crown"},
                        {"type": "purchase", "sku": "tee", "qty": 2, "cid": "c1"}):
            replies = await send(gateway, CHATTER, **message)
            assert [(r["type"], r["code"]) for r in replies] == [("error", "forbidden")], message
        assert (await send(gateway, CHATTER, type="purchase", sku="tee", cid="c9"))[0]["cid"] \
            == "c9"
        assert await send(gateway, CHATTER, type="chat", text="hello") == []
        seen = await quiet(sub)
    assert [e.type for e in seen] == ["chat"]  # nothing else reached the room
    state = await gateway.state("r")
    assert state["likes"] == 0 and state["leaderboard"] == []
    assert state["sale"]["remaining"] == 5
    assert await gateway.sales.orders("r", "") == []


async def test_watching_tokens_like_gift_and_buy(gateway: EventGateway, bus: Bus) -> None:
    await send(gateway, ADMIN, type="start_sale", sku="tee", stock=5, duration_s=60)
    async with bus.subscribe("r") as sub:
        assert await send(gateway, WATCHER, type="like", count=3) == []
        assert await send(gateway, ANCHOR, type="like", count=2) == []
        assert await send(gateway, WATCHER, type="gift", gift="rose") == []
        (order,) = await send(gateway, WATCHER, type="purchase", sku="tee", qty=2)
        seen = await quiet(sub)
    assert order["type"] == "order" and order["order"]["buyer"] == "watcher"
    assert "gift" in {e.type for e in seen}
    assert await gateway.likes.total("r") == 5
    assert (await gateway.state("r"))["leaderboard"] == [["watcher", 5]]
    # the REST rule: a publisher (not a buyer) is refused a purchase like a chatter
    (refused,) = await send(gateway, ANCHOR, type="purchase", sku="tee")
    assert refused["code"] == "forbidden"


async def test_resume_needs_a_join_grant(gateway: EventGateway) -> None:
    await send(gateway, WATCHER, type="like")
    for who in (CHATTER, WATCHER, ANCHOR, ADMIN):
        assert all(r["type"] != "error" for r in await send(gateway, who, type="resume",
                                                            after_seq=0)), who
    (refused,) = await send(gateway, NOBODY, type="resume", after_seq=0)
    assert refused["code"] == "forbidden"


async def test_one_identity_like_flood_adds_at_most_its_rate(
        gateway: EventGateway, bus: Bus) -> None:
    """1000 like messages of count 100 (100,000 taps) in ~2 s from one identity add at most
    the bucket's worth; a viewer beside it keeps every tap it sends."""
    neighbour = claims("neighbour", Grant.SUBSCRIBE)
    loop = asyncio.get_running_loop()
    start = loop.time()
    codes: dict[str, int] = {}
    for _ in range(10):
        for _ in range(100):
            for reply in await send(gateway, WATCHER, type="like", count=100):
                codes[reply["code"]] = codes.get(reply["code"], 0) + 1
        assert await send(gateway, neighbour, type="like", count=2) == []
        await asyncio.sleep(0.2)
    elapsed = loop.time() - start
    await asyncio.sleep(0.6)  # the coalescer's last flush
    total = await gateway.likes.total("r")
    cap = likes.BURST + likes.RATE * elapsed
    assert 20 + 100 <= total <= 20 + cap, (total, elapsed)
    assert set(codes) == {"rate_limited"} and codes["rate_limited"] >= 1000 - cap / 100
    assert gateway.likes.limited == codes["rate_limited"]


def test_tap_buckets_are_bounded(monkeypatch: pytest.MonkeyPatch, store: Store, bus: Bus
                                 ) -> None:
    monkeypatch.setattr(likes, "MAX_BUCKETS", 50)
    counter = likes.Likes(store, bus)
    for i in range(500):
        counter._admit("r", f"id{i}", 1)
    assert len(counter._buckets) == 50


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def test_ws_events_door_refuses_a_chatters_like_gift_and_purchase(server: Any) -> None:
    chatter = await WsClient.open(server.url, "shop", server.token("shop", "c", "chat"))
    watcher = await WsClient.open(server.url, "shop", server.token("shop", "w", "subscribe"))
    try:
        assert (await chatter.next())["type"] == "state"
        assert (await watcher.next())["type"] == "state"
        for message in ({"type": "like", "count": 50}, {"type": "gift", "gift": "heart"},
                        {"type": "purchase", "sku": "tee"}):
            await chatter.send(**message, cid=message["type"])
            error = await chatter.until("error")
            assert (error["code"], error["cid"]) == ("forbidden", message["type"])
        await watcher.send(type="like", count=7)
        assert (await watcher.until("likes"))["total"] == 7
        await watcher.send(type="purchase", sku="tee", cid="p")
        error = await watcher.until("error")  # past the grant, refused for want of a sale
        assert error["cid"] == "p" and error["code"] != "forbidden"
    finally:
        await chatter.close()
        await watcher.close()


async def test_like_rate_zero_lifts_the_limit(store: Store, bus: Bus) -> None:
    gateway = EventGateway(store, bus, Webhooks(WebhookSettings()), like_rate=0)
    try:
        for _ in range(50):
            assert await send(gateway, WATCHER, type="like", count=100) == []
        await asyncio.sleep(0.6)
        assert await gateway.likes.total("r") == 5000
    finally:
        await gateway.close()


async def test_gift_flood_is_rate_limited_per_identity(gateway: EventGateway) -> None:
    """Gifts were already limited (a store counter, so across nodes): 100 gift messages from
    one identity put at most ``RATE_LIMIT`` of them on the leaderboard; another sender's gift
    still goes through."""
    codes = [r["code"] for _ in range(100)
             for r in await send(gateway, WATCHER, type="gift", gift="heart", count=99)]
    assert codes == ["rate_limited"] * (100 - gifts.RATE_LIMIT)
    assert await send(gateway, ANCHOR, type="gift", gift="heart") == []
    assert (await gateway.state("r"))["leaderboard"] == [["watcher", 99 * gifts.RATE_LIMIT],
                                                         ["anchor", 1]]


async def test_ws_events_like_flood_is_refused_and_counted(server: Any) -> None:
    flooder = await WsClient.open(server.url, "taps", server.token("taps", "f", "subscribe"))
    try:
        assert (await flooder.next())["type"] == "state"
        for i in range(30):
            await flooder.send(type="like", count=100, cid=str(i))
        refused = [await flooder.until("error") for _ in range(29)]
        assert {e["code"] for e in refused} == {"rate_limited"}
        seen = [e for e in flooder.received if e["type"] == "likes"]
        assert (seen[-1] if seen else await flooder.until("likes"))["total"] == 100
        async with aiohttp.ClientSession() as http, \
                http.get(server.url + "/metrics") as response:
            text = await response.text()
        match = re.search(r"^shopcast_likes_limited_total (\d+)$", text, re.MULTILINE)
        assert match and int(match.group(1)) == 29
    finally:
        await flooder.close()
