"""Flash sales and orders.

A sale is a store *pool* (``open_pool``): its stock, its time window and its per-buyer tallies.
A purchase is ONE atomic ``consume``: it replays the first order for a used idempotency key,
else checks the window, the stock and the buyer's limit, takes the units and appends the order
to the sale's ledger, all in one Lua script (Redis) or one un-awaited step (memory). Nothing is
read and decided in Python first, so the stock can never oversell and a buyer never exceeds
the limit, however many processes take orders at once.

Sales are kept in the room's ``sales`` hash (sale id -> JSON), the latest sale of each sku in
``sale_of`` (sku -> the same JSON, with the product's title and price as they were at the
start, so a purchase is one read plus the atomic step) and the sale on screen under ``sale``.
Orders are the ledgers of the room's sales.

Every number is checked against the bounds of ``signaling.live.schema`` and the ``sale`` event
is built and packed before the first write, so a refused sale leaves nothing behind. An
idempotency key remembers what it bought (sku and qty): the same key sent again for something
else is ``422 idempotency_key_reused``, decided in the same atomic step.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from signaling.events import Webhook
from signaling.live.catalog import Catalog, Product, check_product
from signaling.live.errors import LiveError, not_found
from signaling.live.schema import MAX_PER_USER, MAX_QTY, MAX_SALE_S, MAX_STOCK, event, pack
from signaling.live.throttle import Coalescer
from signaling.live.timeline import RoomPublisher
from signaling.store import ConsumeOutcome, Store
from signaling.webhooks import Webhooks

REFUSALS = {
    ConsumeOutcome.EXHAUSTED: ("sold_out", "not enough stock left"),
    ConsumeOutcome.LIMIT: ("limit_reached", "that would exceed the per-buyer limit"),
    ConsumeOutcome.CLOSED: ("sale_closed", "the sale is not open"),
    ConsumeOutcome.UNKNOWN: ("no_sale", "no sale for this product"),
}
KEY_REUSED = ("idempotency_key_reused",
              "this idempotency key was used for another purchase (sku or qty)")


def _bounded(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LiveError("invalid", f"{name} is an integer from {low} to {high}", 400)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Sale:
    id: str
    sku: str
    stock: int
    per_user_limit: int
    starts_at_ms: int
    ends_at_ms: int
    title: str = ""  # the product as it was when the sale started: a purchase reads no more
    price: int = 0
    currency: str = "USD"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sale:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Sales:
    def __init__(
        self, store: Store, bus: RoomPublisher, webhooks: Webhooks, catalog: Catalog,
        interval_ms: int = 250,
    ) -> None:
        self.store = store
        self.bus = bus
        self.webhooks = webhooks
        self.catalog = catalog
        self._dirty: dict[str, set[str]] = {}  # room -> skus whose stock changed here
        self.stock = Coalescer(store, "stock", self._flush_stock, interval_ms)

    async def start(
        self, room: str, sku: str, stock: int, per_user_limit: int, duration_s: int
    ) -> dict[str, Any]:
        """Open a sale now for ``duration_s``; it becomes the sale on screen. Everything is
        checked, and the ``sale`` event packed, before the first write."""
        _bounded("stock", stock, 1, MAX_STOCK)
        _bounded("per_user_limit", per_user_limit, 0, MAX_PER_USER)
        _bounded("duration_s", duration_s, 1, MAX_SALE_S)
        product = await self.catalog.require(room, sku)
        check_product(product)  # one stored before the bounds existed is not sold
        now = now_ms()
        sale = Sale("SL_" + uuid.uuid4().hex[:12], sku, stock, per_user_limit, now,
                    now + duration_s * 1000, product.title, product.price, product.currency)
        data = self._view(sale, stock, product)
        announcement = event("sale", **data)
        try:
            pack(announcement)
        except (OverflowError, ValueError, TypeError) as exc:
            raise LiveError("invalid", f"the sale cannot be sent to viewers: {exc}", 400) from exc
        raw = json.dumps(sale.to_json(), allow_nan=False).encode()
        await self.store.open_pool(room, sale.id, stock, opens_at_ms=now,
                                   closes_at_ms=sale.ends_at_ms)
        await self.store.hset(room, "sales", sale.id, raw)
        await self.store.hset(room, "sale_of", sku, raw)
        await self.store.put(room, "sale", sale.id.encode())
        await self.bus.publish(room, announcement)
        return data

    def _view(self, sale: Sale, remaining: int, product: Product | None) -> dict[str, Any]:
        return sale.to_json() | {"remaining": remaining, "server_ms": now_ms(),
                                 "product": product.to_json() if product else None}

    async def _sale(self, room: str, sale_id: str) -> Sale | None:
        raw = await self.store.hget(room, "sales", sale_id)
        return Sale.from_json(json.loads(raw)) if raw else None

    async def current(self, room: str) -> dict[str, Any] | None:
        """The sale on screen with its remaining stock (for joiners' state), or None."""
        sale_id = await self.store.get(room, "sale")
        sale = await self._sale(room, sale_id.decode()) if sale_id else None
        if sale is None:
            return None
        pool = await self.store.pool_state(room, sale.id)
        return self._view(sale, pool.remaining if pool else 0,
                          await self.catalog.get(room, sale.sku))

    async def purchase(
        self, room: str, buyer: str, sku: str, qty: int = 1, key: str = ""
    ) -> tuple[dict[str, Any], bool]:
        """Buy in one atomic step; return (order, duplicate). LiveError says why not."""
        _bounded("qty", qty, 1, MAX_QTY)
        raw = await self.store.hget(room, "sale_of", sku)  # one read, then one atomic step
        if raw is None:
            raise not_found(f"no sale for {sku!r} in this room", "no_sale")
        sale = Sale.from_json(json.loads(raw))
        order = {
            "id": "OR_" + uuid.uuid4().hex[:16], "room": room, "sale_id": sale.id, "sku": sku,
            "title": sale.title, "qty": qty, "buyer": buyer, "unit_price": sale.price,
            "total": sale.price * qty, "currency": sale.currency, "created_at_ms": now_ms(),
            "key": key,
        }
        result = await self.store.consume(
            room, sale.id, holder=buyer, qty=qty, limit=sale.per_user_limit, now_ms=now_ms(),
            record=json.dumps(order).encode(), idempotency_key=key,
            request=json.dumps([sku, qty]).encode(),
        )
        if result.outcome is ConsumeOutcome.DUPLICATE:
            return json.loads(result.record), True
        if result.outcome is ConsumeOutcome.KEY_REUSED:
            raise LiveError(*KEY_REUSED, 422)
        if result.outcome is not ConsumeOutcome.OK:
            code, message = REFUSALS[result.outcome]
            raise LiveError(code, message, 409)
        self.webhooks.emit(Webhook.ORDER_CREATED, room={"name": room}, order=order)
        self._dirty.setdefault(room, set()).add(sku)
        self.stock.mark(room)
        if result.remaining == 0:  # exactly one purchase sees the last unit go
            await self.bus.publish(room, event("sold_out", sku=sku))
        return order, False

    async def orders(self, room: str, buyer: str = "") -> list[dict[str, Any]]:
        """Every order of the room (or of one buyer), oldest first."""
        found = []
        for sale_id in await self.store.hgetall(room, "sales"):
            for raw in await self.store.pool_ledger(room, sale_id):
                order = json.loads(raw)
                if not buyer or order["buyer"] == buyer:
                    found.append(order)
        return sorted(found, key=lambda o: (o["created_at_ms"], o["id"]))

    async def _flush_stock(self, room: str) -> None:
        for sku in sorted(self._dirty.pop(room, set())):
            raw = await self.store.hget(room, "sale_of", sku)
            sale = Sale.from_json(json.loads(raw)) if raw else None
            pool = await self.store.pool_state(room, sale.id) if sale else None
            if pool is not None:
                await self.bus.publish(room, event("stock", sku=sku, remaining=pool.remaining))

    async def close(self) -> None:
        await self.stock.close()
