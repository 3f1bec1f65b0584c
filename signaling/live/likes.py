"""Likes: taps are summed in this process and added to the room's shared total in one atomic
increment per interval; the total is broadcast through a ``Coalescer``, so the room gets at
most one ``likes`` event per 250 ms however many taps arrive, from however many processes.

Taps are rate-limited per (room, identity) by a token bucket held in this process: ``rate``
taps per second (``--like-rate``, 0 = no limit), bursts up to ``BURST`` (one message of the
largest count). A like message
that does not fit is refused whole (``rate_limited``) and adds nothing. In-process rather than a
store counter as chat and gifts use: a tap must stay free of store round trips (that is what
the summing above is for), and likes arrive far more often than chat or gifts. The cost is that
one identity connected to several nodes gets each node's budget; every identity's total is
still bounded. The buckets are bounded too: past ``MAX_BUCKETS`` the least recently used one is
dropped (a bucket that idled refills to full anyway, so only a crowd of active identities can
push out an active one, and then it merely starts from a full bucket).
"""

from __future__ import annotations

import time

from signaling.bus import Bus
from signaling.errors import StoreUnavailable
from signaling.live.errors import LiveError
from signaling.live.schema import event
from signaling.live.throttle import Coalescer
from signaling.store import Store

INTERVAL_MS = 250
RATE = 20  # taps per second per identity per room (the default of --like-rate)
BURST = 100.0  # taps one identity may send at once (the schema's largest `count`)
MAX_BUCKETS = 100_000  # (room, identity) buckets kept in this process


class TapBucket:
    __slots__ = ("at", "tokens")

    def __init__(self, now: float) -> None:
        self.tokens = BURST
        self.at = now

    def take(self, count: int, now: float, rate: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.at) * rate)
        self.at = now
        if count > self.tokens:
            return False
        self.tokens -= count
        return True


class Likes:
    def __init__(self, store: Store, bus: Bus, interval_ms: int = INTERVAL_MS,
                 rate: float = RATE) -> None:
        self.store = store
        self.bus = bus
        self.rate = rate
        self._pending: dict[str, int] = {}
        self._buckets: dict[tuple[str, str], TapBucket] = {}  # least recently used first
        self.limited = 0  # like messages refused by the rate limit
        self.coalescer = Coalescer(store, "likes", self._flush, interval_ms)

    def tap(self, room: str, count: int = 1, identity: str | None = None) -> None:
        """Count taps; never waits (a tap costs no store round trip of its own). With an
        ``identity`` (a client's message) the taps must fit its bucket, else ``LiveError``
        ``rate_limited`` and nothing is counted."""
        if identity is not None and self.rate > 0:
            self._admit(room, identity, count)
        self._pending[room] = self._pending.get(room, 0) + count
        self.coalescer.mark(room)

    def _admit(self, room: str, identity: str, count: int) -> None:
        now = time.monotonic()
        key = (room, identity)
        bucket = self._buckets.pop(key, None) or TapBucket(now)
        self._buckets[key] = bucket
        if len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]
        if not bucket.take(count, now, self.rate):
            self.limited += 1
            raise LiveError("rate_limited", f"at most {self.rate:g} likes per second "
                            f"(bursts of {BURST:g})", 429)

    async def total(self, room: str) -> int:
        raw = await self.store.get(room, "likes")
        return int(raw) if raw else 0

    async def _flush(self, room: str) -> None:
        taps = self._pending.pop(room, 0)
        try:
            total = await self.store.incr(room, "likes", taps) if taps else await self.total(room)
        except StoreUnavailable:  # Redis away: these taps go with the next flush
            self._pending[room] = self._pending.get(room, 0) + taps
            raise
        await self.bus.publish(room, event("likes", total=total))

    async def close(self) -> None:
        await self.coalescer.close()
