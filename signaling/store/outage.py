"""Redis outages as one domain error, logged once per outage.

The Redis backends (store and bus) wrap their calls with ``guard``: a call that fails because
Redis cannot be reached (connection refused or lost, a timeout, a server still loading its
data, a replica that refuses writes during a fail-over) raises ``StoreUnavailable``, which
every door renders as ``503 store_unavailable`` with ``Retry-After``. ``Outage`` remembers
whether the last call failed, so an outage is logged when it starts and when it ends, with how
many calls it refused, instead of once per request.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as redis_errors

from signaling.errors import StoreUnavailable

logger = logging.getLogger("shopcast.signaling.store")

# What "Redis is not there right now" looks like from redis-py (BusyLoadingError, a server
# loading its AOF, is a ConnectionError); any other error is a bug and stays one.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ReadOnlyError,
    ConnectionError, TimeoutError,
)


class Outage:
    """Whether this process's Redis answered its last call; one per client.

    ``reset`` runs when an outage starts: it drops the client's idle pooled connections,
    which the old server closed, so the first calls after Redis is back do not fail on them.
    """

    def __init__(self, reset: Callable[[], Awaitable[object]] | None = None) -> None:
        self._reset = reset
        self._resetting: asyncio.Future[object] | None = None
        self.since: float | None = None  # monotonic start of the current outage
        self.outages = 0  # outages seen since start, for /metrics
        self.refused = 0  # calls refused with StoreUnavailable, for /metrics
        self._refused_now = 0

    @property
    def down(self) -> bool:
        return self.since is not None

    def failed(self, exc: BaseException) -> StoreUnavailable:
        self.refused += 1
        self._refused_now += 1
        if self.since is None:
            self.since = time.monotonic()
            self.outages += 1
            logger.warning("redis unreachable (%s: %s): store calls answer 503 "
                           "store_unavailable until it is back", type(exc).__name__, exc)
            if self._reset is not None:
                self._resetting = asyncio.ensure_future(self._reset())
                self._resetting.add_done_callback(_quiet)
        return StoreUnavailable()

    def answered(self) -> None:
        if self.since is None:
            return
        logger.warning("redis reachable again after %.1f s; %d calls were refused meanwhile",
                       time.monotonic() - self.since, self._refused_now)
        self.since = None
        self._refused_now = 0


def _quiet(task: asyncio.Future[object]) -> None:
    """Dropping connections of a server that is gone may fail too; nothing to do about it."""
    if not task.cancelled():
        task.exception()


class HasOutage:
    outage: Outage


T = TypeVar("T")
Method = Callable[..., Awaitable[Any]]


def _guarded(method: Method) -> Method:
    @functools.wraps(method)
    async def call(self: HasOutage, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await method(self, *args, **kwargs)
        except UNREACHABLE as exc:
            raise self.outage.failed(exc) from exc
        self.outage.answered()
        return result

    return call


def guard(*extra: str) -> Callable[[type[T]], type[T]]:
    """A class decorator for a Redis backend: every public ``async def`` (and the ``extra``
    private ones) raises ``StoreUnavailable`` instead of redis-py's connection errors and keeps
    the instance's ``outage`` up to date."""

    def wrap(cls: type[T]) -> type[T]:
        names = [name for name, member in vars(cls).items()
                 if not name.startswith("_") and inspect.iscoroutinefunction(member)]
        for name in (*names, *extra):
            setattr(cls, name, _guarded(getattr(cls, name)))
        return cls

    return wrap


async def every(interval_s: float, step: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``step`` every ``interval_s`` for ever (a background loop's body). A Redis outage
    skips a round quietly (``Outage`` logged it once); any other failure is logged, and the
    loop goes on either way."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await step()
        except StoreUnavailable:
            pass
        except Exception:
            logger.exception("%s failed", what)
