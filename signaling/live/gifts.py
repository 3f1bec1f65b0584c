"""Gifts: a catalog of gift kinds with a value each, gift events with sender and value, and a
per-room leaderboard of total value sent (a sorted set, so the ranking is one atomic add)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from signaling.live.errors import LiveError
from signaling.live.schema import event
from signaling.live.timeline import RoomPublisher
from signaling.store import Store
from signaling.tokens import Claims

LEADERBOARD_SIZE = 10
RATE_LIMIT = 10  # gift messages per identity per window
RATE_WINDOW_MS = 10_000


@dataclass(frozen=True)
class Gift:
    id: str
    title: str
    value: int  # in coins

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


CATALOG: dict[str, Gift] = {g.id: g for g in [
    Gift("heart", "Heart", 1), Gift("rose", "Rose", 5), Gift("star", "Star", 20),
    Gift("rocket", "Rocket", 100), Gift("crown", "Crown", 500),
]}


class Gifts:
    def __init__(self, store: Store, bus: RoomPublisher) -> None:
        self.store = store
        self.bus = bus

    def catalog(self) -> list[dict[str, Any]]:
        return [g.to_json() for g in CATALOG.values()]

    async def leaderboard(self, room: str) -> list[list[Any]]:
        top = await self.store.ztop(room, "gifts", LEADERBOARD_SIZE)
        return [[identity, int(score)] for identity, score in top]

    async def send(self, room: str, claims: Claims, gift_id: str, count: int = 1) -> None:
        gift = CATALOG.get(gift_id)
        if gift is None:
            raise LiveError("unknown_gift", f"no gift {gift_id!r} in the catalog", 404)
        sent = await self.store.incr(room, "rate:gift:" + claims.identity, ttl_ms=RATE_WINDOW_MS)
        if sent > RATE_LIMIT:
            raise LiveError("rate_limited", f"at most {RATE_LIMIT} gifts per "
                            f"{RATE_WINDOW_MS // 1000} s", 429)
        value = gift.value * count
        await self.store.zincr(room, "gifts", claims.identity, value)
        await self.bus.publish(room, event(
            "gift", identity=claims.identity, name=claims.name or claims.identity, gift=gift.id,
            title=gift.title, count=count, value=value, leaderboard=await self.leaderboard(room),
        ))
