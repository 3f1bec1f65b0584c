"""REST commerce and moderation on both backends: products, pin, sales, orders with an
Idempotency-Key, the order_created webhook, and moderation endpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import free_port
from live_helpers import claims
from rest_helpers import Api, signaling_of

from shopcast.config import Config
from signaling.tokens import Grant

pytest_plugins = ["store_fixtures"]


@pytest_asyncio.fixture
async def hooks() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", received
    await runner.cleanup()


@pytest.fixture
def config(
    config: Config, backend: str, prefix: str, hooks: tuple[str, list[dict[str, Any]]]
) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    config.webhook_urls = [hooks[0]]
    return config


def apis(server: Any, room: str = "shop") -> tuple[Api, Api, Api]:
    admin = Api(server.url, server.token(room, "anchor", "admin"))
    alice = Api(server.url, server.token(room, "alice", "subscribe", "chat"))
    bob = Api(server.url, server.token(room, "bob", "subscribe"))
    return admin, alice, bob


async def test_products_pin_sale_and_orders(
    server: Any, hooks: tuple[str, list[dict[str, Any]]]
) -> None:
    admin, alice, bob = apis(server)
    base = "/api/v1/rooms/shop"
    product = {"sku": "tee", "title": "T-shirt", "price": 1999, "currency": "EUR",
               "image_url": "https://cdn.example/tee.png"}
    assert await admin.post(base + "/products", product) == (201, product)
    status, body = await alice.post(base + "/products", product)
    assert status == 403 and body["error"]["code"] == "missing_grant"
    status, body = await admin.post(base + "/products", {**product, "image_url": "javascript:x"})
    assert status == 400
    status, body = await alice.get(base + "/products")
    assert status == 200 and body == {"products": [product], "pinned": None}

    assert (await admin.post(base + "/pin", {"sku": "nope"}))[0] == 404
    assert await admin.post(base + "/pin", {"sku": "tee"}) == (200, {"product": product})
    assert (await alice.get(base + "/products"))[1]["pinned"] == "tee"

    assert (await admin.post(base + "/sales", {"sku": "nope", "stock": 1, "duration_s": 9}))[0] \
        == 404
    status, sale = await admin.post(
        base + "/sales", {"sku": "tee", "stock": 2, "per_user_limit": 1, "duration_s": 60})
    assert status == 201 and sale["remaining"] == 2 and sale["product"] == product

    status, body = await alice.post(base + "/orders", {"sku": "tee"})
    assert status == 400 and body["error"]["code"] == "idempotency_key_required"
    key = {"Idempotency-Key": "a-1"}
    status, order = await alice.post(base + "/orders", {"sku": "tee", "qty": 1}, headers=key)
    assert status == 201 and order["buyer"] == "alice" and order["total"] == 1999
    assert await alice.post(base + "/orders", {"sku": "tee", "qty": 1}, headers=key) == (
        200, order)
    status, body = await alice.post(base + "/orders", {"sku": "tee"},
                                    headers={"Idempotency-Key": "a-2"})
    assert status == 409 and body["error"]["code"] == "limit_reached"
    status, bob_order = await bob.post(base + "/orders", {"sku": "tee"},
                                       headers={"Idempotency-Key": "a-1"})  # keys are per buyer
    assert status == 201 and bob_order["id"] != order["id"]
    status, body = await admin.post(base + "/orders", {"sku": "tee"},
                                    headers={"Idempotency-Key": "z"})
    assert status == 409 and body["error"]["code"] == "sold_out"

    assert (await admin.get(base + "/orders"))[1]["orders"] == [order, bob_order]
    assert (await alice.get(base + "/orders"))[1]["orders"] == [order]
    assert (await bob.get(base + "/sales"))[1]["sale"]["remaining"] == 0

    for _ in range(50):
        if len([h for h in hooks[1] if h["event"] == "order_created"]) == 2:
            break
        await asyncio.sleep(0.05)
    created = [h["order"]["id"] for h in hooks[1] if h["event"] == "order_created"]
    assert created == [order["id"], bob_order["id"]]


async def test_moderation_endpoints(server: Any) -> None:
    admin, _alice, _bob = apis(server)
    base = "/api/v1/rooms/shop/chat"
    live = signaling_of(server).live
    viewer = claims("alice", Grant.CHAT, room="shop")
    message = await live.chat.send("shop", viewer, "hello")
    status, body = await admin.get(base)
    assert status == 200 and [m["text"] for m in body["messages"]] == ["hello"]
    assert (await admin.call("DELETE", base + "/" + message["id"]))[0] == 204
    assert (await admin.call("DELETE", base + "/" + message["id"]))[0] == 404
    assert await admin.post(base + "/filter", {"words": ["Spam", " spam "]}) == (
        200, {"words": ["spam"]})
    assert await admin.post(base + "/mute", {"identity": "alice", "duration_s": 60}) == (
        200, {"identity": "alice", "muted": True})
    assert await live.moderation.is_muted("shop", "alice")
    assert await admin.post(base + "/ban", {"identity": "alice"}) == (
        200, {"identity": "alice", "banned": True})
    assert await live.is_banned("shop", "alice")
    assert (await admin.post(base + "/ban", {"identity": "alice", "banned": False}))[0] == 200
    assert not await live.is_banned("shop", "alice")
