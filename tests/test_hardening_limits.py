"""Issue 14 #12 limits: a header-read timeout (slowloris), the webhook queue bounded in bytes,
the memory store's expiring keys evicted, and a participant's queue of event messages bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import free_port, loopback_config
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu import events_channel
from sfu.event_bridge import BUSY, MAX_PENDING, Endpoint, EventBridge
from sfu.node import NODE_KEY
from shopcast.app import create_app
from shopcast.cli import http_runner
from shopcast.config import Config
from shopcast.control_plane import signaling_settings
from signaling.bus.memory import MemoryBus
from signaling.claims import Claims
from signaling.live.resume import ResumeBudget, ResumeLimits
from signaling.store.memory import MemoryStore
from signaling.store.records import ConsumeOutcome
from signaling.webhooks import Webhooks, WebhookSettings

HEADER_TIMEOUT_MS = 1000
SLOW_CLIENTS = 200


@pytest_asyncio.fixture
async def quick_server(tmp_path: Path) -> AsyncIterator[tuple[str, Config]]:
    """The whole app run the way ``shopcast serve`` runs it, with a 1 s header timeout."""
    config = loopback_config(tmp_path, workers=0)
    config.http_header_timeout_ms = HEADER_TIMEOUT_MS
    runner = http_runner(create_app(config), config)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield f"http://{config.host}:{config.port}", config
    finally:
        await runner.cleanup()


async def _half_request(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HT")  # half a request line, then nothing
    await writer.drain()
    return reader, writer


async def _closed_at(reader: asyncio.StreamReader, limit_s: float) -> float | None:
    """When the server closed the connection (EOF or reset), or None if it is still open."""
    try:
        data = await asyncio.wait_for(reader.read(4096), limit_s)
    except TimeoutError:
        return None
    except ConnectionError:
        return time.monotonic()
    return time.monotonic() if data == b"" else None


async def test_slowloris_connections_are_closed_at_the_header_timeout(
    quick_server: tuple[str, Config],
) -> None:
    url, config = quick_server
    started = time.monotonic()
    conns = await asyncio.gather(
        *(_half_request(config.host, config.port) for _ in range(SLOW_CLIENTS)))
    try:
        # the node keeps serving while they hang
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                assert r.status == 200
        limit = HEADER_TIMEOUT_MS / 1000 + 3.0
        closed = await asyncio.gather(*(_closed_at(reader, limit) for reader, _ in conns))
        still_open = sum(c is None for c in closed)
        assert still_open == 0, f"{still_open} of {SLOW_CLIENTS} slow connections still open"
        latest = max(c for c in closed if c is not None) - started
        assert HEADER_TIMEOUT_MS / 1000 * 0.9 <= latest <= limit
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
                assert r.status == 200
    finally:
        for _, writer in conns:
            writer.close()


async def test_a_request_in_progress_outlives_the_header_timeout(tmp_path: Path) -> None:
    """The timeout is for reading a request, not for handling it: a slow answer still comes,
    and a keep-alive connection that sends its next request in time is reused."""
    config = loopback_config(tmp_path, workers=0)
    config.http_header_timeout_ms = 300

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.9)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/slow", slow)
    runner = http_runner(app, config)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            assert head.startswith(b"HTTP/1.1 200")
            assert await asyncio.wait_for(reader.readexactly(4), 1) == b"done"
            await asyncio.sleep(0.1)  # within the timeout: the same connection goes on
        assert await _closed_at(reader, 2.0) is not None  # idle past it: closed
        writer.close()
    finally:
        await runner.cleanup()


# --- webhooks: a dead receiver ---------------------------------------------------------------


async def test_webhook_queue_is_bounded_in_bytes_against_a_dead_receiver() -> None:
    """The audit saw ~640 MB queued for a dead receiver: bounded by count only. Now the bytes
    are bounded too; the oldest go first and are counted; the newest wait for the receiver."""
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every delivery fails
    bound = 256 * 1024
    hooks = Webhooks(WebhookSettings([dead], "k" * 32, attempts=1, backoff_s=0.01,
                                     queue_bytes=bound))
    await hooks.start()
    try:
        filler = "x" * 20_000
        for n in range(500):  # ~10 MB of bodies, 40x the bound
            hooks.emit("participant_joined", room={"name": "r", "n": n, "pad": filler})
            assert hooks.queued_bytes(dead) <= bound
        queued = [json.loads(body)["room"]["n"] for _, body in list(hooks._queues[dead]._queue)]  # type: ignore[attr-defined]
        assert queued and queued == list(range(500 - len(queued), 500))  # the newest kept
        assert len(queued) <= bound // 20_000
        assert hooks.stats.dropped == 500 - len(queued)
        assert hooks.stats.dropped_bytes > 9_000_000
        # a body larger than the whole bound is dropped alone, the queue kept
        hooks.emit("participant_joined", room={"name": "r", "pad": "y" * (bound + 1)})
        assert hooks.stats.dropped == 500 - len(queued) + 1
        assert len(hooks._queues[dead]._queue) == len(queued)  # type: ignore[attr-defined]
        await asyncio.wait_for(hooks.drain(), 10)  # the kept ones are tried and given up
        assert hooks.queued_bytes(dead) == 0
    finally:
        await hooks.close()


def test_webhook_queue_bytes_flag_reaches_the_webhooks(tmp_path: Path) -> None:
    config = loopback_config(tmp_path, workers=0)
    config.webhook_queue_bytes = 12345
    assert signaling_settings(config).webhooks.queue_bytes == 12345


# --- memory store: expiring keys are evicted ------------------------------------------------


async def test_memory_store_evicts_expired_keys_and_replies() -> None:
    """The audit: TTL keys and idempotency replies were dropped only when touched again, so a
    process kept every rate-limit key and reply it ever wrote. 10,000 of each are gone after
    their TTL without being touched; keys without a TTL, or written again with a longer one,
    stay."""
    store = MemoryStore()
    await store.start()
    try:
        await store.open_pool("shop", "sku", 100_000)
        for n in range(10_000):
            await store.put("limits", f"k{n}", b"1", ttl_ms=300)
            await store.incr("rate", f"i{n}", ttl_ms=300)
            outcome = await store.consume(
                "shop", "sku", holder=f"buyer{n}", qty=1, limit=0, now_ms=0, record=b"o",
                idempotency_key=f"key{n}", idempotency_ttl_ms=300, request=b"r")
            assert outcome.outcome is ConsumeOutcome.OK
        await store.put("limits", "forever", b"1")
        await store.put("limits", "k0", b"again", ttl_ms=60_000)  # written again, longer TTL
        assert len(store._values) == 20_001 and len(store._replies) == 10_000
        for _ in range(50):  # the sweep runs once a second: 5 s at most
            if len(store._values) == 2 and not store._replies:
                break
            await asyncio.sleep(0.1)
        assert set(store._values) == {("limits", "forever"), ("limits", "k0")}
        assert not store._replies and not store._expiries[1:]
        # the per-room key index that closing a room uses forgets them too
        assert store._scope_keys == {"limits": {(0, ("limits", "forever")),
                                                (0, ("limits", "k0"))},
                                     "shop": {(3, ("shop", "sku"))}}
        assert await store.get("limits", "k0") == b"again"
        assert len(await store.pool_ledger("shop", "sku")) == 10_000  # orders are not expiring
    finally:
        await store.close()


def test_a_sweep_pass_is_bounded() -> None:
    store = MemoryStore()
    for n in range(50):
        store._store("s", f"k{n}", 1, ttl_ms=1)
    time.sleep(0.01)
    assert store.sweep(budget=20) == 20 and len(store._values) == 30
    assert store.sweep() == 30 and not store._values and not store._expiries


# --- events data channel: a participant that never drains -------------------------------------


@pytest.mark.slow
async def test_an_events_channel_that_never_drains_is_closed_and_counted(
    server: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """A viewer whose SCTP stops acknowledging (it never drains its ``events`` channel) is
    closed once 1 MiB waits for it, with a log line and a count in /metrics, instead of the
    node queueing for it without bound; the viewer beside it gets every event."""
    node = server.app[NODE_KEY]
    anchor = await publish(server.url, "drain", server.token("drain", "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    viewers: list[Any] = []
    try:
        await wait_for(lambda: "drain" in node.rooms and node.rooms["drain"].live, 10, "live")
        for name in ("stuck", "healthy"):
            viewers.append(await play(server.url, "drain",
                                      server.token("drain", name, "subscribe", "chat"),
                                      decode=False, events=True))
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), 15, "state")
        stuck, healthy = viewers

        async def deaf(_chunk: Any) -> None:  # no SACKs from here on: nothing drains
            return None

        stuck.pc.sctp._receive_chunk = deaf
        feed = node.events.rooms["drain"]
        ends = {e.claims.identity: e for e in feed.local.values()}
        before = events_channel.stats.slow_closed
        payload = "x" * 20_000
        for n in range(100):  # 2 MB each, 20 KB every 10 ms: a healthy client keeps up
            packed = msgpack.packb({"type": "bulk", "seq": 0, "n": n, "text": payload})
            ends["stuck"].send(packed)
            ends["healthy"].send(packed)
            await asyncio.sleep(0.01)
        assert events_channel.stats.slow_closed == before + 1  # closed once, not per send
        assert "not drained by the client" in caplog.text
        await wait_for(lambda: len(healthy.events.of_type("bulk")) == 100, 10, "healthy gets all")
        assert healthy.events.channel.readyState == "open"
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as r:
            assert f"shopcast_events_slow_closed_total {before + 1}" in await r.text()
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


class _StalledHandler:
    """The control plane's handler with its store stalled: nothing it is given returns until
    ``go`` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.seen: list[bytes] = []

    async def handle(self, room: str, claims: Claims, raw: bytes,
                     budget: ResumeBudget | None = None) -> list[bytes]:
        await self.go.wait()
        self.seen.append(raw)
        return []

    async def snapshot(self, room: str) -> bytes:
        return msgpack.packb({"type": "state", "seq": 0})

    def resume_budget(self) -> ResumeBudget:
        return ResumeBudget(ResumeLimits())


async def test_a_participants_queue_of_messages_is_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 messages from one participant while the handler is stalled: at most MAX_PENDING
    wait (tasks and bytes bounded), the rest get ``error too_many_pending``, counted and logged
    once; another participant still gets its place; once the store answers, what waited is
    handled in order."""
    handler = _StalledHandler()
    bridge = EventBridge(MemoryBus(), handler)
    flooder_got: list[bytes] = []
    other_got: list[bytes] = []
    claims = Claims(identity="flooder", room="r", grants=frozenset(), name="", expires_at=0)
    flooder = Endpoint("r", claims, flooder_got.append)
    other = Endpoint("r", dataclasses.replace(claims, identity="other"), other_got.append)
    try:
        bridge.open_local("f", flooder)
        bridge.open_local("o", other)
        tasks_before = len(asyncio.all_tasks())
        for n in range(10_000):
            bridge.receive(flooder, msgpack.packb({"type": "like", "n": n}))
        assert flooder.pending <= MAX_PENDING
        assert len(asyncio.all_tasks()) - tasks_before <= MAX_PENDING
        refused = 10_000 - (MAX_PENDING - 1)  # the join state took one place
        assert bridge.refused == refused and flooder_got.count(BUSY) == refused
        assert caplog.text.count("refused: 256 wait to be handled") == 1
        bridge.receive(other, msgpack.packb({"type": "like", "n": -1}))  # its own bound
        assert BUSY not in other_got
        handler.go.set()
        await wait_for(lambda: flooder.pending == 0 and other.pending == 0, 5, "drained")
        numbers = [msgpack.unpackb(raw)["n"] for raw in handler.seen]
        assert [n for n in numbers if n >= 0] == list(range(MAX_PENDING - 1))  # in order
        assert numbers.count(-1) == 1
        bridge.receive(flooder, msgpack.packb({"type": "like", "n": 0}))  # room again
        await wait_for(lambda: len(handler.seen) == MAX_PENDING + 1, 5, "handled again")
    finally:
        await bridge.close()
