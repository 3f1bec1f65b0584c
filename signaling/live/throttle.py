"""Coalesced broadcasts: at most one event per interval per room and topic, cluster-wide.

Likes and stock change far faster than clients need to hear about them. Each process marks a
room dirty; a per-room task then tries to *claim* the interval with an atomic put-if-absent
(TTL = the interval) in the shared store. Only the claimant broadcasts, so however many
processes hold clients of the room, the room sees at most one event per interval. A process
that lost the claim stays dirty and tries again next interval, so its changes are never lost
(the broadcast reads the shared total, which includes them by then). Through a Redis outage
the room stays dirty and is tried again each interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from common.tasks import stop_tasks
from signaling.errors import StoreUnavailable
from signaling.store import Store

logger = logging.getLogger("shopcast.signaling.live")

Flush = Callable[[str], Awaitable[None]]


class Coalescer:
    def __init__(self, store: Store, topic: str, flush: Flush, interval_ms: int = 250) -> None:
        self.store = store
        self.topic = topic
        self.flush = flush
        self.interval_ms = interval_ms
        self.flushes = 0
        self._dirty: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def mark(self, room: str) -> None:
        """Something changed in ``room``; a broadcast follows within one interval or so."""
        self._dirty.add(room)
        if room not in self._tasks:
            self._tasks[room] = asyncio.create_task(self._run(room))

    async def _run(self, room: str) -> None:
        try:
            while room in self._dirty:
                try:
                    await self._claim_and_flush(room)
                except StoreUnavailable:
                    self._dirty.add(room)  # logged where it was met; next interval again
                await asyncio.sleep(self.interval_ms / 1000)
        finally:
            self._tasks.pop(room, None)  # no await between the last check and this

    async def _claim_and_flush(self, room: str) -> None:
        claimed = await self.store.put(
            room, "tick:" + self.topic, b"1", ttl_ms=self.interval_ms, only_if_absent=True
        )
        if not claimed:
            return
        self._dirty.discard(room)  # marks during the flush make us dirty again
        try:
            await self.flush(room)
            self.flushes += 1
        except StoreUnavailable:
            raise
        except Exception:
            logger.exception("%s broadcast failed in room %s", self.topic, room)

    async def close(self) -> None:
        await stop_tasks(list(self._tasks.values()))
