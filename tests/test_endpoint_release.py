"""A worker's ``events`` channel, once closed, is let go of in the publisher's process.

Found by the churn soak (``python -m loadtest soak --trace``, BENCHMARKS.md "Churn soak"):
after 30 minutes, with every room closed, the server still held one ``Endpoint`` (with its
claims, resume budget, event gate, last task and timer) per data channel ever opened in a
worker: ``open_remote`` armed the token-expiry timer and ``close_remote`` never disarmed it, so
the event loop kept each endpoint until its token's ``exp``.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref

from live_helpers import VIEWER, make_gateway
from waiting import wait_for

from sfu.event_bridge import Endpoint, EventBridge
from signaling.bus import Bus
from signaling.store import Store

pytest_plugins = ["store_fixtures"]

CHANNELS = 20


async def test_closed_remote_channels_are_released(store: Store, bus: Bus) -> None:
    gateway = make_gateway(store, bus)
    bridge = EventBridge(bus, gateway)
    claims = dataclasses.replace(VIEWER, expires_at=int(time.time()) + 3600)
    sent: list[bytes] = []
    refs = []
    try:
        for _ in range(CHANNELS):
            endpoint = Endpoint("r", claims, sent.append)
            bridge.open_remote(0, lambda _packed: None, endpoint)
            refs.append(weakref.ref(endpoint))
        await wait_for(lambda: len(sent) == CHANNELS, 10, "every channel's join state")
        for ref in refs:
            live = ref()
            assert live is not None
            await wait_for(lambda e=live: e.pending == 0, 10, "the join state task done")
            bridge.close_remote(0, live)
        del endpoint, live
        gc.collect()
        assert [ref for ref in refs if ref() is not None] == []
        assert "r" not in bridge.rooms  # the room's feed went with its last channel
    finally:
        await bridge.close()
