"""What survives Redis: orders need persistence, and lost data is noticed and rebuilt.

Two rules, both for a Redis backend (the memory backend lives and dies with its process):

- Commerce needs a Redis that persists. At startup ``require_persistence`` reads ``CONFIG GET
  appendonly`` and ``CONFIG GET save``; with neither on, the process refuses to start (a
  restart would lose every confirmed order and running sale), unless the operator said
  ``--allow-volatile-redis``. A Redis that refuses CONFIG (managed services rename it) is
  logged as unknown and accepted.
- Lost data are noticed: ``DataLossWatch`` reads the deployment's data epoch
  (``Store.data_epoch``) every second. When Redis comes back empty the epoch is gone; the first
  process to look writes a new one and every process, seeing it change, runs its repairs: a
  node records its live rooms and sessions again, so the REST API answers for them while media
  flows. (Node heartbeats re-register by themselves within a second.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.tasks import stop_task
from signaling.store.outage import every

if TYPE_CHECKING:
    from signaling.store.base import Store
    from signaling.store.redis import RedisStore

logger = logging.getLogger("shopcast.signaling.store")

WATCH_INTERVAL_S = 1.0
VOLATILE_FLAG = "--allow-volatile-redis"

Repair = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class Persistence:
    """What a Redis server writes to disk (``known`` False: CONFIG was refused)."""

    aof: bool = False
    snapshots: str = ""  # the ``save`` rule; "" = no RDB snapshots
    known: bool = True
    detail: str = ""

    @property
    def durable(self) -> bool:
        return self.aof or bool(self.snapshots)


class VolatileRedis(SystemExit):
    """Refusal to start on a Redis that persists nothing; the message is the one line shown."""


async def require_persistence(store: RedisStore, *, allow_volatile: bool) -> Persistence:
    """Refuse (``VolatileRedis``) a Redis with neither AOF nor snapshots unless allowed."""
    found = await store.persistence()
    if not found.known:
        logger.warning("cannot read redis persistence (CONFIG GET refused: %s); make sure "
                       "appendonly or save is on, or a restart loses every order", found.detail)
    elif not found.durable and allow_volatile:
        logger.warning("redis persists nothing (appendonly no, save \"\"); running anyway "
                       "(%s): a restart loses every order and sale", VOLATILE_FLAG)
    elif not found.durable:
        raise VolatileRedis(
            "refusing to start: redis persists nothing (appendonly no, save \"\"), so a restart "
            "would lose every order; turn on appendonly (or save), or pass "
            f"{VOLATILE_FLAG} (SHOPCAST_ALLOW_VOLATILE_REDIS=1) to accept that")
    return found


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


class DataLossWatch:
    """Notices that the store lost its data and runs this process's repairs, in order.

    A repair that fails (Redis gone again) leaves the old epoch in place, so every repair runs
    again at the next check; they are idempotent."""

    def __init__(self, store: Store, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.store = store
        self.interval_s = interval_s
        self.epoch = ""
        self.losses = 0  # data losses seen and repaired, for /metrics
        self._repairs: list[Repair] = []
        self._task: asyncio.Task[None] | None = None

    def on_loss(self, repair: Repair) -> None:
        self._repairs.append(repair)

    async def start(self) -> None:
        self.epoch = await self.store.data_epoch(new_epoch())
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        await stop_task(self._task)

    async def check(self) -> bool:
        """True when the data were lost since the last check (and are now repaired)."""
        current = await self.store.data_epoch(new_epoch())
        if current == self.epoch:
            return False
        logger.warning("redis lost its data (epoch %s is now %s): registering this "
                       "process's rooms and sessions again", self.epoch, current)
        for repair in self._repairs:
            await repair()
        self.epoch = current
        self.losses += 1
        return True

    async def _watch(self) -> None:
        await every(self.interval_s, self.check, "checking the store for data loss")
