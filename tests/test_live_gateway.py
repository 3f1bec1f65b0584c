"""The event gateway on both backends: chat, moderation, likes, gifts, products, state,
and bad input answered to its sender only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from live_helpers import ADMIN, VIEWER, Kicks, claims, make_gateway, pack, send, unpack

from signaling.bus import Bus, Event, Subscription
from signaling.live.catalog import Product
from signaling.live.gateway import EventGateway
from signaling.live.schema import MAX_EVENT_BYTES, SERVER_EVENTS
from signaling.rooms import VIEWERS_INTERVAL_S, RoomService
from signaling.store import ParticipantRecord, Store, Transport
from signaling.tokens import Grant
from signaling.webhooks import Webhooks, WebhookSettings

pytest_plugins = ["store_fixtures"]


@pytest_asyncio.fixture
async def gateway(store: Store, bus: Bus) -> AsyncIterator[EventGateway]:
    gw = make_gateway(store, bus)
    try:
        yield gw
    finally:
        await gw.close()


async def drain(sub: Subscription, wait: float = 0.3) -> list[Event]:
    """Everything the subscription gets until it is quiet for ``wait`` seconds."""
    events = []
    while True:
        try:
            events.append(await asyncio.wait_for(sub.get(), wait))
        except TimeoutError:
            return events


def check_declared(events: list[Event]) -> None:
    for e in events:
        spec = SERVER_EVENTS[e.type]
        assert {k for k in e.data if k not in ("type", "seq")} <= {f.name for f in spec.fields}


async def test_chat_is_broadcast_and_kept_for_joiners(gateway: EventGateway, bus: Bus) -> None:
    async with bus.subscribe("r") as sub:
        assert await send(gateway, VIEWER, type="chat", text="  hello <b>x</b> ") == []
        (event,) = await drain(sub)
    assert event.type == "chat" and event.data["text"] == "hello <b>x</b>"
    assert event.data["identity"] == "viewer" and event.seq == 1
    state = unpack(await gateway.snapshot("r"))
    assert state["type"] == "state" and state["seq"] == 1
    assert [m["text"] for m in state["chat"]] == ["hello <b>x</b>"]


async def test_chat_needs_the_chat_grant_and_is_rate_limited(gateway: EventGateway) -> None:
    (reply,) = await send(gateway, claims("v", Grant.SUBSCRIBE), type="chat", text="hi")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    for i in range(5):
        assert await send(gateway, VIEWER, type="chat", text=f"m{i}") == []
    (reply,) = await send(gateway, VIEWER, type="chat", text="one too many", cid="c1")
    assert (reply["code"], reply["cid"]) == ("rate_limited", "c1")
    for i in range(8):  # the anchor is not rate limited
        assert await send(gateway, ADMIN, type="chat", text=f"a{i}") == []


async def test_history_is_the_last_50_chats(gateway: EventGateway, bus: Bus) -> None:
    for i in range(60):
        assert await send(gateway, ADMIN, type="chat", text=f"m{i}") == []
        gateway.likes.tap("r")  # other events never push chat out of history
    state = unpack(await gateway.snapshot("r"))
    assert [m["text"] for m in state["chat"]] == [f"m{i}" for i in range(10, 60)]


async def test_moderation(gateway: EventGateway, bus: Bus, store: Store) -> None:
    kicks = Kicks()
    gateway.moderation.kick = kicks
    async with bus.subscribe("r") as sub:
        await send(gateway, VIEWER, type="chat", text="spam here")
        (chat,) = await drain(sub)
        (ack,) = await send(gateway, ADMIN, type="delete_chat", id=chat.data["id"])
        assert ack == {"type": "ack", "re": "delete_chat"}
        (deleted,) = await drain(sub)
        assert deleted.type == "chat_deleted" and deleted.data["id"] == chat.data["id"]
        assert unpack(await gateway.snapshot("r"))["chat"] == []

        await send(gateway, ADMIN, type="set_filter", words=["Buy Now", "scam"])
        (reply,) = await send(gateway, VIEWER, type="chat", text="total SCAM!")
        assert reply["code"] == "blocked"

        await send(gateway, ADMIN, type="mute", identity="viewer")
        (reply,) = await send(gateway, VIEWER, type="chat", text="hello")
        assert reply["code"] == "muted"
        await send(gateway, ADMIN, type="mute", identity="viewer", muted=False)
        assert await send(gateway, VIEWER, type="chat", text="hello") == []

        (reply,) = await send(gateway, VIEWER, type="ban", identity="other")
        assert reply["code"] == "forbidden"  # not an admin
        await send(gateway, ADMIN, type="ban", identity="viewer")
        assert await gateway.is_banned("r", "viewer") and kicks.calls == [("r", "viewer")]
        (reply,) = await send(gateway, VIEWER, type="chat", text="back?")
        assert reply["code"] == "banned"
        events = await drain(sub)
        assert [e.type for e in events] == ["chat", "kicked"]
        assert events[1].data == {"type": "kicked", "identity": "viewer", "reason": "banned",
                                  "seq": events[1].seq}
        check_declared(events)
        await send(gateway, ADMIN, type="ban", identity="viewer", banned=False)
        assert not await gateway.is_banned("r", "viewer")


async def test_likes_are_coalesced(gateway: EventGateway, bus: Bus) -> None:
    """2,000 taps over ~1 s give at most one `likes` per 250 ms, ending on the full total.
    The taps come from 100 viewers (20 each, within one identity's like rate)."""
    viewers = [claims(f"v{i}", Grant.SUBSCRIBE) for i in range(100)]
    async with bus.subscribe("r") as sub:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for round_ in range(40):
            for j in range(50):
                assert await send(gateway, viewers[(round_ * 50 + j) % 100], type="like") == []
            await asyncio.sleep(0.025)
        elapsed = loop.time() - start
        events = await drain(sub, 0.6)
    assert all(e.type == "likes" for e in events)
    assert events[-1].data["total"] == 2000
    assert len(events) <= elapsed / 0.25 + 2
    assert [e.data["total"] for e in events] == sorted(e.data["total"] for e in events)
    assert unpack(await gateway.snapshot("r"))["likes"] == 2000


async def test_gifts_and_leaderboard(gateway: EventGateway, bus: Bus) -> None:
    async with bus.subscribe("r") as sub:
        await send(gateway, claims("ann", name="Ann"), type="gift", gift="rose", count=3)
        await send(gateway, claims("bob"), type="gift", gift="rocket")
        (reply,) = await send(gateway, claims("bob"), type="gift", gift="yacht")
        assert reply["code"] == "unknown_gift"
        events = await drain(sub)
    assert [e.type for e in events] == ["gift", "gift"]
    assert events[0].data["value"] == 15 and events[0].data["name"] == "Ann"
    assert events[1].data["leaderboard"] == [["bob", 100], ["ann", 15]]
    check_declared(events)
    state = unpack(await gateway.snapshot("r"))
    assert state["leaderboard"] == [["bob", 100], ["ann", 15]]
    assert {"id": "rose", "title": "Rose", "value": 5} in state["gifts"]


async def test_products_pin_and_state(gateway: EventGateway, bus: Bus) -> None:
    await gateway.catalog.put("r", Product("tee", "T-shirt", 1999, "EUR", "https://x/t.png"))
    async with bus.subscribe("r") as sub:
        (ack,) = await send(gateway, ADMIN, type="pin", sku="tee")
        assert ack["result"]["title"] == "T-shirt"
        (reply,) = await send(gateway, ADMIN, type="pin", sku="nope")
        assert reply["code"] == "product_not_found"
        (ack,) = await send(gateway, ADMIN, type="start_sale", sku="tee", stock=3,
                            per_user_limit=1, duration_s=60)
        events = await drain(sub)
    assert [e.type for e in events] == ["product_pinned", "sale"]
    assert events[0].data["product"]["price"] == 1999
    check_declared(events)
    state = unpack(await gateway.snapshot("r"))
    assert state["pinned"]["sku"] == "tee"
    sale = state["sale"]
    assert (sale["sku"], sale["remaining"], sale["per_user_limit"]) == ("tee", 3, 1)
    assert sale["ends_at_ms"] - sale["starts_at_ms"] == 60_000
    await send(gateway, ADMIN, type="pin", sku=None)
    assert unpack(await gateway.snapshot("r"))["pinned"] is None


async def test_purchase_over_the_channel(gateway: EventGateway, bus: Bus) -> None:
    await gateway.catalog.put("r", Product("mug", "Mug", 500))
    await gateway.sales.start("r", "mug", 2, 1, 60)
    async with bus.subscribe("r") as sub:
        (order,) = await send(gateway, claims("a"), type="purchase", sku="mug", key="k1", cid="x")
        assert order["type"] == "order" and not order["duplicate"] and order["cid"] == "x"
        (again,) = await send(gateway, claims("a"), type="purchase", sku="mug", key="k1")
        assert again["duplicate"] and again["order"] == order["order"]
        (limit,) = await send(gateway, claims("a"), type="purchase", sku="mug", key="k2")
        assert limit["code"] == "limit_reached"
        await send(gateway, claims("b"), type="purchase", sku="mug")
        (sold,) = await send(gateway, claims("c"), type="purchase", sku="mug")
        assert sold["code"] == "sold_out"
        events = await drain(sub, 0.6)
    assert [e.type for e in events].count("sold_out") == 1
    assert [e.data["remaining"] for e in events if e.type == "stock"][-1] == 0
    assert len(await gateway.sales.orders("r")) == 2


@pytest.mark.parametrize("raw, code", [
    (b"\xc1garbage", "malformed"),
    (pack({"no": "type"}), "unknown_type"),
    (pack(["chat"]), "malformed"),
    (pack({"type": "teleport"}), "unknown_type"),
    (pack({"type": "chat"}), "invalid"),
    (pack({"type": "chat", "text": 5}), "invalid"),
    (pack({"type": "chat", "text": "x" * 201}), "invalid"),
    (pack({"type": "chat", "text": "hi", "html": "<b>"}), "invalid"),
    (pack({"type": "like", "count": True}), "invalid"),
    (pack({"type": "chat", "text": "x" * (MAX_EVENT_BYTES + 1)}), "too_large"),
])
async def test_bad_input_is_an_error_to_the_sender_only(
    gateway: EventGateway, bus: Bus, raw: bytes, code: str
) -> None:
    async with bus.subscribe("r") as sub:
        replies = [unpack(r) for r in await gateway.handle("r", VIEWER, raw)]
        assert [(r["type"], r["code"]) for r in replies] == [("error", code)]
        assert await drain(sub, 0.1) == []
    assert await bus.last_seq("r") == 0


async def test_token_for_another_room_is_refused(gateway: EventGateway) -> None:
    (reply,) = await send(gateway, claims("v", Grant.CHAT, room="other"), type="chat", text="x")
    assert reply["code"] == "forbidden"


async def test_resume_replies_the_missed_events(gateway: EventGateway, bus: Bus) -> None:
    for i in range(5):
        await send(gateway, ADMIN, type="chat", text=f"m{i}")
    replies = await send(gateway, VIEWER, type="resume", after_seq=2)
    assert [(r["type"], r["seq"], r["text"]) for r in replies] == [
        ("chat", 3, "m2"), ("chat", 4, "m3"), ("chat", 5, "m4")]
    assert await send(gateway, VIEWER, type="resume", after_seq=5) == []


async def test_viewer_count_is_coalesced(gateway: EventGateway, store: Store, bus: Bus) -> None:
    """Viewers join through the media plane's reports (RoomService), the one source of the
    count: 100 joins make at most a few ``viewers`` events, the last one with the total."""
    rooms = RoomService(store, bus, Webhooks(WebhookSettings()))
    async with bus.subscribe("r") as sub:
        for n in range(1, 101):
            await rooms.session_joined("r", ParticipantRecord(f"s{n}", f"v{n}", Transport.WHEP))
        events = [e for e in await drain(sub, VIEWERS_INTERVAL_S + 0.5)
                  if e.data["type"] == "viewers"]
    assert 1 <= len(events) <= 3 and events[-1].data["count"] == 100
    assert unpack(await gateway.snapshot("r"))["viewers"] == 100
