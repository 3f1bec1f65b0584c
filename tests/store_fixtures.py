"""Store and bus fixtures parametrized over both backends, for tests to import.

``from store_fixtures import backend, store, bus`` runs a test once on the memory backend and
once on a real redis-server (conftest's ``redis_server``); every test gets its own key prefix,
so tests never see each other's data and need no FLUSHDB.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from signaling.backends import open_backends
from signaling.bus import Bus
from signaling.store import Store

BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``""`` for memory, the redis URL for redis."""
    if request.param == "memory":
        return ""
    url: str = request.getfixturevalue("redis_server")
    return url


@pytest.fixture
def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest_asyncio.fixture
async def backends(backend: str, prefix: str) -> AsyncIterator[tuple[Store, Bus]]:
    store, bus = open_backends(backend, prefix, history=100)
    await store.start()
    await bus.start()
    try:
        yield store, bus
    finally:
        await bus.close()
        await store.close()


@pytest.fixture
def store(backends: tuple[Store, Bus]) -> Store:
    return backends[0]


@pytest.fixture
def bus(backends: tuple[Store, Bus]) -> Bus:
    return backends[1]
