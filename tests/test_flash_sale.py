"""Flash-sale concurrency on both backends: 2,000 concurrent purchase attempts by 500 buyers
against stock 100 sell exactly 100 units, nobody exceeds the per-buyer limit, and retries with
the same idempotency key return the same order."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from typing import Any

from live_helpers import make_gateway

from signaling.bus import Bus
from signaling.live.catalog import Product
from signaling.live.errors import LiveError
from signaling.store import Store

pytest_plugins = ["store_fixtures"]

BUYERS, ATTEMPTS, STOCK, LIMIT = 500, 2000, 100, 2


async def attempt(gateway: Any, buyer: str, key: str) -> tuple[str, str, dict[str, Any] | None]:
    try:
        order, _duplicate = await gateway.sales.purchase("r", buyer, "tv", 1, key)
    except LiveError as exc:
        return buyer, key, {"refused": exc.code}
    return buyer, key, order


async def test_exactly_the_stock_is_sold(store: Store, bus: Bus) -> None:
    gateway = make_gateway(store, bus)
    try:
        await gateway.catalog.put("r", Product("tv", "TV", 49_900))
        await gateway.sales.start("r", "tv", STOCK, LIMIT, 60)
        rng = random.Random(6)
        jobs = [(f"b{i % BUYERS}", f"k{i}") for i in range(ATTEMPTS)]
        rng.shuffle(jobs)
        results = await asyncio.gather(*(attempt(gateway, b, k) for b, k in jobs))

        orders = [(b, k, o) for b, k, o in results if o is not None and "id" in o]
        refused = collections.Counter(o["refused"] for _b, _k, o in results
                                      if o is not None and "refused" in o)
        assert len(orders) == STOCK
        assert set(refused) <= {"sold_out", "limit_reached"}
        assert len(orders) + sum(refused.values()) == ATTEMPTS
        per_buyer = collections.Counter(b for b, _k, _o in orders)
        assert max(per_buyer.values()) <= LIMIT
        state = await store.pool_state("r", (await gateway.sales.current("r") or {})["id"])
        assert state is not None and (state.remaining, state.consumed) == (0, STOCK)
        ledger = await gateway.sales.orders("r")
        assert len(ledger) == STOCK and len({o["id"] for o in ledger}) == STOCK

        # retries with the same keys, concurrently: the same orders, nothing more sold
        retries = await asyncio.gather(*(attempt(gateway, b, k) for b, k, _o in orders))
        assert [o for _b, _k, o in retries] == [o for _b, _k, o in orders]
        assert len(await gateway.sales.orders("r")) == STOCK
        ids = {o["id"] for o in ledger}
        assert {json.dumps(o, sort_keys=True) for _b, _k, o in orders} == {
            json.dumps(o, sort_keys=True) for o in ledger}
        assert ids == {o["id"] for _b, _k, o in orders if o}
    finally:
        await gateway.close()


async def test_window_closes(store: Store, bus: Bus) -> None:
    gateway = make_gateway(store, bus)
    try:
        await gateway.catalog.put("r", Product("tv", "TV", 1))
        await gateway.sales.start("r", "tv", 5, 0, 1)
        await asyncio.sleep(1.05)
        _b, _k, result = await attempt(gateway, "late", "k")
        assert result == {"refused": "sale_closed"}
        _b, _k, result = await attempt(gateway, "x", "k2")
        assert result == {"refused": "sale_closed"}
        assert (await gateway.sales.current("r") or {})["remaining"] == 5
    finally:
        await gateway.close()
