"""Unbounded numbers and nesting cannot poison a room (issue 14, defect 8), and an
Idempotency-Key bought with once cannot buy something else (defect 12), on both backends.

Each test sends what the audit sent (a 2**64 price, NaN metadata, 40 KB of nested JSON, a key
reused for another sku) and checks the refusal is a JSON 4xx with nothing stored, and that the
room still works for everyone else: its state packs and a /ws/events join gets it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import msgpack
import pytest
from live_helpers import ADMIN, VIEWER, WsClient, make_gateway, send
from rest_helpers import Api, signaling_of

from shopcast.config import Config
from signaling.backends import open_backends
from signaling.json_bounds import MAX_DEPTH, MAX_INT, JsonBoundsError, depth, loads
from signaling.live.catalog import Product
from signaling.live.schema import CLIENT_EVENTS, MAX_PRICE
from signaling.store import ConsumeOutcome, Store

pytest_plugins = ["store_fixtures"]

ROOM = "shop"
BASE = f"/api/v1/rooms/{ROOM}"
HUGE = 2**64
PRODUCT = {"sku": "tee", "title": "T-shirt", "price": 1999}


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def post_raw(server: Any, path: str, raw: bytes, token: str, method: str = "POST"
                   ) -> tuple[int, str, Any]:
    """Send ``raw`` as a JSON body; return status, content type and the decoded JSON body."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http, http.request(
        method, server.url + path, data=raw, headers=headers
    ) as response:
        text = await response.text()
        body = json.loads(text) if response.content_type == "application/json" else text
        return response.status, response.content_type, body


def refused(result: tuple[int, str, Any], code: str = "invalid_body") -> bool:
    status, content_type, body = result
    return (status == 400 and content_type == "application/json"
            and body["error"]["code"] == code)


async def assert_room_usable(server: Any) -> None:
    """The room's state packs, and a /ws/events join receives it."""
    live = signaling_of(server).live
    msgpack.unpackb(await live.snapshot(ROOM))
    client = await WsClient.open(server.url, ROOM, server.token(ROOM, "v", "subscribe"))
    try:
        state = await client.next()
        assert state["type"] == "state"
    finally:
        await client.close()


# --- REST: numbers ---------------------------------------------------------------------------


async def test_huge_price_is_refused_and_nothing_is_stored(server: Any) -> None:
    admin = Api(server.url, server.token(ROOM, "anchor", "admin"))
    token = admin.token
    for price in (HUGE, MAX_PRICE + 1, -1, 1.5):
        result = await post_raw(server, BASE + "/products",
                                json.dumps({**PRODUCT, "price": price}).encode(), token)
        assert refused(result), (price, result)
    assert await admin.get(BASE + "/products") == (200, {"products": [], "pinned": None})
    assert (await admin.post(BASE + "/products", {**PRODUCT, "price": MAX_PRICE}))[0] == 201
    await assert_room_usable(server)


async def test_pin_and_sale_of_a_poisoned_product_write_nothing(server: Any) -> None:
    """A product stored before the bounds existed (2**64 price) can be neither pinned nor
    sold: 400, the pin and the sale are not written, and the room's state still packs."""
    admin = Api(server.url, server.token(ROOM, "anchor", "admin"))
    store = signaling_of(server).store
    await store.hset(ROOM, "products", "tee", json.dumps({**PRODUCT, "price": HUGE}).encode())

    status, body = await admin.post(BASE + "/pin", {"sku": "tee"})
    assert status == 400 and body["error"]["code"] == "invalid"
    assert await store.get(ROOM, "pinned") is None
    status, body = await admin.post(BASE + "/sales", {"sku": "tee", "stock": 5, "duration_s": 60})
    assert status == 400 and body["error"]["code"] == "invalid"
    assert await store.get(ROOM, "sale") is None
    assert await store.hgetall(ROOM, "sales") == {}
    assert await store.hget(ROOM, "sale_of", "tee") is None
    status, body = await admin.post(BASE + "/orders", {"sku": "tee"},
                                    headers={"Idempotency-Key": "k"})
    assert status == 404 and body["error"]["code"] == "no_sale"
    assert (await admin.get(BASE + "/sales"))[1] == {"sale": None}
    await assert_room_usable(server)


async def test_sale_numbers_out_of_range_are_refused(server: Any) -> None:
    admin = Api(server.url, server.token(ROOM, "anchor", "admin"))
    assert (await admin.post(BASE + "/products", PRODUCT))[0] == 201
    good = {"sku": "tee", "stock": 5, "per_user_limit": 1, "duration_s": 60}
    for name, value in [("stock", HUGE), ("stock", 0), ("per_user_limit", HUGE),
                        ("duration_s", HUGE), ("duration_s", 1e300)]:
        result = await post_raw(server, BASE + "/sales",
                                json.dumps({**good, name: value}).encode(), admin.token)
        assert refused(result), (name, value, result)
    assert (await admin.get(BASE + "/sales"))[1] == {"sale": None}
    alice = Api(server.url, server.token(ROOM, "alice", "subscribe"))
    assert (await admin.post(BASE + "/sales", good))[0] == 201
    result = await post_raw(server, BASE + "/orders", json.dumps({"sku": "tee", "qty": HUGE})
                            .encode(), alice.token)
    assert refused(result)
    assert (await alice.get(BASE + "/orders"))[1] == {"orders": []}
    await assert_room_usable(server)


# --- REST: NaN, Infinity, depth --------------------------------------------------------------


async def test_non_finite_and_huge_numbers_in_metadata_are_refused(server: Any) -> None:
    token = server.token(ROOM, "anchor", "admin")
    root = server.token("*", "ops", "admin")  # creating rooms acts on every room
    for value in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"18446744073709551616",
                  b"9" * 5000):
        raw = b'{"name": "' + ROOM.encode() + b'", "metadata": {"x": ' + value + b"}}"
        result = await post_raw(server, "/api/v1/rooms", raw, root)
        assert refused(result), (value[:20], result)
    api = Api(server.url, token)
    assert (await api.get(BASE))[0] == 404  # nothing was created
    assert (await api.post("/api/v1/rooms", {"name": ROOM, "metadata": {"x": 1}},
                           token=root))[0] == 201
    result = await post_raw(server, BASE, b'{"metadata": {"x": NaN}}', token, method="PATCH")
    assert refused(result)
    status, room = await api.get(BASE)
    assert status == 200 and room["metadata"] == {"x": 1}
    await assert_room_usable(server)


async def test_deep_json_is_a_400_not_a_500(server: Any) -> None:
    token = server.token("*", "ops", "admin")  # creating rooms acts on every room
    deep = b"[" * 40_000 + b"]" * 40_000  # 80 KB would be over the body cap: keep it under
    for raw in (b"[" * 40_000, b'{"name": "x", "metadata": ' + b'{"a": ' * 6_000 + b"1"
                + b"}" * 6_001, deep[:30_000] + deep[-30_000:]):
        result = await post_raw(server, "/api/v1/rooms", raw, token)
        assert refused(result), result[:2]
    nested: Any = 1
    for _ in range(9):  # within the parser's 32 levels, over metadata's 8
        nested = {"a": nested}
    result = await post_raw(server, "/api/v1/rooms",
                            json.dumps({"name": ROOM, "metadata": nested}).encode(), token)
    assert refused(result)
    result = await post_raw(server, "/api/v1/rooms",
                            json.dumps({"name": ROOM, "metadata": {"x": "y" * 17_000}}).encode(),
                            token)
    assert refused(result)
    assert (await Api(server.url, token).get(BASE))[0] == 404
    await assert_room_usable(server)


# --- events (msgpack): numbers ---------------------------------------------------------------


async def test_client_event_numbers_are_bounded(store: Store, bus: Any) -> None:
    """Every int field of every client event has a maximum a JSON reader and msgpack carry,
    and the largest msgpack integer is refused with an ``error``, nothing changed."""
    for spec in CLIENT_EVENTS.values():
        for field in spec.fields:
            if field.kind in ("int", "num"):
                assert field.min is not None and field.max is not None, (spec.type, field)
                assert field.max <= MAX_INT, (spec.type, field.name)
    gateway = make_gateway(store, bus)
    big = 2**64 - 1
    await gateway.catalog.put("r", Product("tee", "T", 5))
    messages = [
        {"type": "start_sale", "sku": "tee", "stock": big, "duration_s": 60},
        {"type": "start_sale", "sku": "tee", "stock": 1, "duration_s": big},
        {"type": "purchase", "sku": "tee", "qty": big},
        {"type": "resume", "after_seq": big},
        {"type": "like", "count": big},
        {"type": "mute", "identity": "x", "duration_s": big},
    ]
    for message in messages:
        who = ADMIN if message["type"] in ("start_sale", "mute") else VIEWER
        replies = await send(gateway, who, **message)
        assert [r["type"] for r in replies] == ["error"], (message, replies)
        assert replies[0]["code"] == "invalid"
    assert await gateway.sales.current("r") is None
    msgpack.unpackb(await gateway.snapshot("r"))
    await gateway.close()


# --- idempotency -----------------------------------------------------------------------------


async def test_idempotency_key_reused_for_another_purchase_is_422(server: Any) -> None:
    admin = Api(server.url, server.token(ROOM, "anchor", "admin"))
    alice = Api(server.url, server.token(ROOM, "alice", "subscribe"))
    for sku in ("tee", "cap"):
        assert (await admin.post(BASE + "/products", {**PRODUCT, "sku": sku}))[0] == 201
        assert (await admin.post(BASE + "/sales", {"sku": sku, "stock": 9, "duration_s": 60})
                )[0] == 201
    key = {"Idempotency-Key": "k-1"}
    status, order = await alice.post(BASE + "/orders", {"sku": "tee", "qty": 2}, headers=key)
    assert status == 201 and order["sku"] == "tee"
    assert await alice.post(BASE + "/orders", {"sku": "tee", "qty": 2}, headers=key) == (
        200, order)
    for other in ({"sku": "cap", "qty": 2}, {"sku": "tee", "qty": 1}, {"sku": "cap"}):
        status, body = await alice.post(BASE + "/orders", other, headers=key)
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused", other
    assert (await alice.get(BASE + "/orders"))[1] == {"orders": [order]}
    sale = (await alice.get(BASE + "/sales"))[1]["sale"]
    assert sale["sku"] == "cap" and sale["remaining"] == 9  # nothing bought with the key
    assert await alice.post(BASE + "/orders", {"sku": "tee", "qty": 2}, headers=key) == (
        200, order)


async def test_idempotency_key_reused_over_the_channel(store: Store, bus: Any) -> None:
    gateway = make_gateway(store, bus)
    for sku in ("tee", "cap"):
        await gateway.catalog.put("r", Product(sku, "T", 5))
        await gateway.sales.start("r", sku, 9, 0, 60)
    first = await send(gateway, VIEWER, type="purchase", sku="tee", key="k", cid="1")
    assert first[0]["type"] == "order" and not first[0]["duplicate"]
    again = await send(gateway, VIEWER, type="purchase", sku="tee", key="k", cid="2")
    assert again[0]["type"] == "order" and again[0]["duplicate"]
    assert again[0]["order"] == first[0]["order"]
    other = await send(gateway, VIEWER, type="purchase", sku="cap", key="k", cid="3")
    assert other == [{"type": "error", "code": "idempotency_key_reused",
                      "message": other[0]["message"], "cid": "3"}]
    assert len(await gateway.sales.orders("r")) == 1
    await gateway.close()


async def test_store_consume_compares_the_request(store: Store) -> None:
    now = int(time.time() * 1000)
    await store.open_pool("s", "p", 5, opens_at_ms=now - 1000, closes_at_ms=now + 60_000)

    async def buy(request: bytes, key: str = "k") -> Any:
        return await store.consume("s", "p", holder="a", qty=1, limit=0, now_ms=now,
                                   record=b"order:" + request, idempotency_key=key,
                                   request=request)

    assert (await buy(b"tee")).outcome is ConsumeOutcome.OK
    again = await buy(b"tee")
    assert again.outcome is ConsumeOutcome.DUPLICATE and again.record == b"order:tee"
    reused = await buy(b"cap")
    assert reused.outcome is ConsumeOutcome.KEY_REUSED and reused.remaining == 4
    assert (await buy(b"cap", key="k2")).outcome is ConsumeOutcome.OK
    # without a request to compare (a caller that sends none), a used key replays as before
    legacy = await store.consume("s", "p", holder="a", qty=1, limit=0, now_ms=now,
                                 record=b"x", idempotency_key="k")
    assert legacy.outcome is ConsumeOutcome.DUPLICATE and legacy.record == b"order:tee"


async def test_redis_key_written_before_requests_were_kept_still_replays(
    redis_server: str, prefix: str
) -> None:
    """An idempotency key stored as a plain string (before keys kept their request) replays
    its order as before instead of failing on the new hash layout (a Redis key layout only)."""
    from signaling.store.redis import RedisStore

    store, bus = open_backends(redis_server, prefix, history=10)
    await store.start()
    await bus.start()
    try:
        assert isinstance(store, RedisStore)
        now = int(time.time() * 1000)
        await store.open_pool("s", "p", 5, opens_at_ms=now - 1000, closes_at_ms=now + 60_000)
        await store._r.set(store.keys.idempotency("s", "a", "old"), b"first", px=60_000)
        result = await store.consume("s", "p", holder="a", qty=1, limit=0, now_ms=now,
                                     record=b"second", idempotency_key="old", request=b"tee")
        assert result.outcome is ConsumeOutcome.DUPLICATE and result.record == b"first"
        pool = await store.pool_state("s", "p")
        assert pool is not None and pool.remaining == 5
    finally:
        await bus.close()
        await store.close()


# --- the bounded parser ----------------------------------------------------------------------


def test_depth_ignores_brackets_in_strings_and_is_linear() -> None:
    assert depth(b'{"a": [1, {"b": "[[[[\\"]]"}]}') == 3
    assert depth(b'"\\\\" [') == 1
    assert loads(b'{"a": "[[[["}') == {"a": "[[[["}
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(JsonBoundsError):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    # an unterminated string full of escaped quotes: quadratic for a naive regex, not here
    started = time.monotonic()
    assert depth(b'"' + b'\\"' * 30_000 + b"[" * 100) == 0
    assert time.monotonic() - started < 0.5
    for bad in (b"NaN", b"[Infinity]", b"-Infinity", b"1e999", str(MAX_INT + 1).encode()):
        with pytest.raises(JsonBoundsError):
            loads(bad)
    assert loads(str(MAX_INT).encode()) == MAX_INT and loads(b"1.5e3") == 1500.0


def test_every_number_in_a_request_body_is_bounded() -> None:
    """No REST body schema accepts a number without a minimum and a maximum, and free-form
    metadata is bounded in depth and size."""
    from signaling.api import ROUTES
    from signaling.api.schema import Schema

    unbounded: list[str] = []
    free_form: list[str] = []

    def walk(schema: Schema, where: str) -> None:
        if schema.get("type") in ("integer", "number") and not (
            "minimum" in schema and "maximum" in schema
        ):
            unbounded.append(where)
        if schema.get("type") == "object" and not schema.get("properties") and not (
            "x-maxDepth" in schema and "x-maxBytes" in schema
        ):
            free_form.append(where)
        for name, item in schema.get("properties", {}).items():
            walk(item, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(schema[key], f"{where}[]")

    for route in ROUTES:
        if route.body is not None:
            walk(route.body, f"{route.method} {route.path}")
    assert unbounded == [] and free_form == []
