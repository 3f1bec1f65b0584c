"""Likes: taps are summed in this process and added to the room's shared total in one atomic
increment per interval; the total is broadcast through a ``Coalescer``, so the room gets at
most one ``likes`` event per 250 ms however many taps arrive, from however many processes."""

from __future__ import annotations

from signaling.bus import Bus
from signaling.live.schema import event
from signaling.live.throttle import Coalescer
from signaling.store import Store

INTERVAL_MS = 250


class Likes:
    def __init__(self, store: Store, bus: Bus, interval_ms: int = INTERVAL_MS) -> None:
        self.store = store
        self.bus = bus
        self._pending: dict[str, int] = {}
        self.coalescer = Coalescer(store, "likes", self._flush, interval_ms)

    def tap(self, room: str, count: int = 1) -> None:
        """Count taps; never waits (a tap costs no store round trip of its own)."""
        self._pending[room] = self._pending.get(room, 0) + count
        self.coalescer.mark(room)

    async def total(self, room: str) -> int:
        raw = await self.store.get(room, "likes")
        return int(raw) if raw else 0

    async def _flush(self, room: str) -> None:
        taps = self._pending.pop(room, 0)
        total = await self.store.incr(room, "likes", taps) if taps else await self.total(room)
        await self.bus.publish(room, event("likes", total=total))

    async def close(self) -> None:
        await self.coalescer.close()
