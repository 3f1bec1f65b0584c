"""Redis connections from one URL, so Sentinel needs no extra settings.

- ``redis://[:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock?db=0``:
  a plain connection (redis-py's own URL forms).
- ``redis+sentinel://[:password@]host:26379,host2:26379/service_name[/db]``: ask the
  Sentinels for the current master of ``service_name`` and follow fail-overs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"
MAX_CONNECTIONS = 64
# A pooled connection idle this long is PINGed (and re-made) before its next command, so the
# first requests after a Redis restart do not fail on connections the old server closed.
HEALTH_CHECK_S = 1


def redis_client(url: str) -> Redis:
    """A client for ``url``; responses stay bytes (records and events are binary-safe)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        # a burst (a flash sale) waits for a free connection instead of failing
        pool = BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=10,
                                               health_check_interval=HEALTH_CHECK_S)
        return Redis(connection_pool=pool)
    netloc = parts.netloc.rpartition("@")
    password = unquote(netloc[0].partition(":")[2]) if netloc[0] else None
    hosts: list[tuple[str, int]] = []
    for item in netloc[2].split(","):
        host, _, port = item.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a Sentinel URL names the service: redis+sentinel://host:port/service")
    options: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0,
                               "health_check_interval": HEALTH_CHECK_S}
    if password:
        options["password"] = password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, sentinel_kwargs={"password": password} if password else {}
    )
    client: Redis = sentinel.master_for(path[0], **options)
    return client
