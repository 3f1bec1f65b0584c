"""Choose the backend once: memory for a single process, Redis when a URL is configured."""

from __future__ import annotations

from signaling.bus import Bus, MemoryBus
from signaling.store import MemoryStore, Store


def open_backends(redis_url: str = "", prefix: str = "shopcast", history: int = 1000) -> tuple[
    Store, Bus
]:
    """A (Store, Bus) pair sharing one Redis client, or the in-memory pair without a URL.
    Call ``start()`` on both before use and ``close()`` after."""
    if not redis_url:
        return MemoryStore(), MemoryBus(history)
    from signaling.bus.redis import RedisBus
    from signaling.store.connect import redis_client
    from signaling.store.outage import Outage
    from signaling.store.redis import RedisStore

    client = redis_client(redis_url)
    # one client, one view of whether Redis answers; an outage drops its idle connections
    outage = Outage(reset=lambda: client.connection_pool.disconnect(inuse_connections=False))
    return RedisStore(client, prefix, outage), RedisBus(client, prefix, history, outage)
