"""Issue 14, defect 1: ``resume`` is bounded in rate and bytes per connection, on every path
that serves it (``/ws/events``, ``/ws``, the ``events`` data channel), on both backends.

The attack: a 20-byte ``{"type": "resume", "after_seq": low}`` made the server re-send up to
999 events each time, with no limit. Here a client floods it at 100 messages/s on a room with
1000 events of about 1 KB, and a legitimate client in another room measures chat round trips
meanwhile: the flooder gets a bounded number of bytes and ``resume_limited`` errors, the other
room keeps its latency, and ``/metrics`` counts the refusals.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import pytest
from live_helpers import ADMIN, VIEWER, WsClient, make_gateway, pack, unpack
from waiting import wait_for

from sfu.event_bridge import Endpoint, EventBridge
from shopcast.config import Config
from signaling.bus import Bus
from signaling.live.resume import ResumeBudget, ResumeLimits
from signaling.service import SIGNALING_KEY
from signaling.store import Store

pytest_plugins = ["store_fixtures"]

FLOOD_ROOM, CALM_ROOM = "flood", "calm"
EVENTS = 1000
TEXT = "x" * 1000  # each history event packs to about 1.1 KB
FLOOD_RATE = 100  # resume messages per second
FLOOD_S = 3.0
LIMITS = ResumeLimits()
# Unbounded, the flood would be re-sent 100 events x 1.1 KB x 300 = 33 MB. Bounded, it is at
# most the burst plus what refills in FLOOD_S, each at most max_bytes, plus the small errors.
MAX_FLOOD_BYTES = 1_000_000
RTT_P95_S = 0.25


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def fill(bus: Bus, room: str, count: int = EVENTS) -> int:
    for i in range(count):
        await bus.publish(room, {"type": "chat", "id": f"m{i}", "identity": "a", "name": "a",
                                 "text": TEXT, "ts": 0})
    return await bus.last_seq(room)


def test_budget_is_a_token_bucket() -> None:
    now = [0.0]
    budget = ResumeBudget(ResumeLimits(burst=2, per_s=0.5), clock=lambda: now[0])
    assert budget.take() == 0.0
    assert budget.take() == 0.0
    assert budget.take() == pytest.approx(2.0)  # empty: one more in 1 / per_s
    now[0] = 1.0
    assert budget.take() == pytest.approx(1.0)
    now[0] = 2.0
    assert budget.take() == 0.0
    now[0] = 100.0  # refills up to the burst, not beyond
    assert [budget.take() == 0.0 for _ in range(3)] == [True, True, False]
    with pytest.raises(ValueError):
        ResumeLimits(burst=0)


async def test_gateway_caps_and_rate(store: Store, bus: Bus) -> None:
    """Per resume: over the event or byte cap, a fresh state (no history read past the event
    cap); per connection: the burst, then ``resume_limited`` with nothing re-sent."""
    gateway = make_gateway(store, bus)
    last = await fill(bus, "r", 100)  # the fixture bus keeps 100 events
    budget = ResumeBudget(ResumeLimits(burst=3, per_s=0.01, max_events=50, max_bytes=20_000))
    gateway.resume_limits = budget.limits

    async def resume(after: int) -> list[dict[str, Any]]:
        raw = pack({"type": "resume", "after_seq": after, "cid": "c"})
        return [unpack(r) for r in await gateway.handle("r", VIEWER, raw, budget)]

    few = await resume(last - 10)  # 10 x 1.1 KB: within both caps, the events themselves
    assert [e["seq"] for e in few] == list(range(last - 9, last + 1))
    assert [e["type"] for e in await resume(last - 60)] == ["state"]  # over max_events
    assert [e["type"] for e in await resume(last - 30)] == ["state"]  # 33 KB: over max_bytes
    assert gateway.resume_limited["size"] == 2
    (refused,) = await resume(last - 10)
    assert (refused["type"], refused["code"], refused["cid"]) == ("error", "resume_limited", "c")
    assert gateway.resume_limited["rate"] == 1
    # another connection has its own bucket
    other = await gateway.handle("r", ADMIN, pack({"type": "resume", "after_seq": last - 1}),
                                 gateway.resume_budget())
    assert [unpack(r)["seq"] for r in other] == [last]


async def test_data_channel_resume_flood_is_limited(store: Store, bus: Bus) -> None:
    """The events data channel: each channel (Endpoint) has its bucket in the bridge."""
    gateway = make_gateway(store, bus)
    last = await fill(bus, "r", 100)
    bridge = EventBridge(bus, gateway)
    flooder_out: list[bytes] = []
    calm_out: list[bytes] = []
    flooder = Endpoint("r", VIEWER, flooder_out.append)
    calm = Endpoint("r", ADMIN, calm_out.append)
    try:
        for _ in range(50):
            bridge.receive(flooder, pack({"type": "resume", "after_seq": last - 20}))
        bridge.receive(calm, pack({"type": "resume", "after_seq": last - 20}))
        def answered() -> int:  # resumes answered: an error, or 20 events each
            kinds = [unpack(r)["type"] for r in flooder_out]
            return kinds.count("error") + kinds.count("chat") // 20

        await wait_for(lambda: len(calm_out) >= 20 and answered() == 50, 10, "the replies")
        replies = [unpack(r) for r in flooder_out]
        served = [r for r in replies if r["type"] == "chat"]
        errors = [r for r in replies if r["type"] == "error"]
        assert len(served) <= 20 * (LIMITS.burst + 1)  # burst, plus at most one refill
        assert len(errors) >= 50 - LIMITS.burst - 1
        assert {e["code"] for e in errors} == {"resume_limited"}
        assert [unpack(r)["seq"] for r in calm_out] == list(range(last - 19, last + 1))
    finally:
        await bridge.close()


async def _metric(server: Any, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as response:
        text = await response.text()
    match = re.search(re.escape(name) + r" (\S+)", text)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


async def _flood(client: WsClient, after: int, stop_at: float) -> tuple[int, int]:
    """Send resumes at FLOOD_RATE until ``stop_at`` while counting what comes back."""
    received = errors = 0

    async def reader() -> None:
        nonlocal received, errors
        while True:
            message = await client.ws.receive()
            if message.type != aiohttp.WSMsgType.BINARY:
                return
            received += len(message.data)
            if unpack(message.data).get("code") == "resume_limited":
                errors += 1

    task = asyncio.create_task(reader())
    try:
        for _ in range(int(FLOOD_RATE * FLOOD_S)):
            if time.monotonic() >= stop_at:
                break
            await client.send(type="resume", after_seq=after)
            await asyncio.sleep(1 / FLOOD_RATE)
        await asyncio.sleep(0.5)  # replies still on their way count too
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return received, errors


async def _round_trips(server: Any, stop_at: float) -> list[float]:
    """Chat round trips of an anchor in another room (admins are not chat rate limited)."""
    client = await WsClient.open(server.url, CALM_ROOM, server.token(CALM_ROOM, "anchor", "admin"))
    rtts: list[float] = []
    try:
        await client.until("state")
        for i in range(200):
            if time.monotonic() >= stop_at:
                break
            began = time.monotonic()
            await client.send(type="chat", text=f"rtt {i}")
            while (await client.until("chat", 5.0))["text"] != f"rtt {i}":
                pass
            rtts.append(time.monotonic() - began)
            await asyncio.sleep(0.05)
    finally:
        await client.close()
    return rtts


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


@pytest.mark.slow
async def test_ws_events_resume_flood_is_bounded_and_other_rooms_keep_their_latency(
    server: Any,
) -> None:
    bus = server.app[SIGNALING_KEY].bus
    last = await fill(bus, FLOOD_ROOM)
    flooder = await WsClient.open(server.url, FLOOD_ROOM,
                                  server.token(FLOOD_ROOM, "flooder", "subscribe"))
    try:
        await flooder.until("state")
        stop_at = time.monotonic() + FLOOD_S
        # 100 events back: within the per-resume caps, so every allowed resume costs 110 KB
        (received, errors), rtts = await asyncio.gather(
            _flood(flooder, last - 100, stop_at), _round_trips(server, stop_at))
    finally:
        await flooder.close()
    print(f"flood: {received} bytes, {errors} resume_limited; other room: {len(rtts)} chat "
          f"round trips, p95 {p95(rtts) * 1000:.1f} ms")
    assert received < MAX_FLOOD_BYTES, f"the flooder was sent {received} bytes"
    assert errors >= FLOOD_RATE * FLOOD_S * 0.5, f"only {errors} resume_limited errors"
    assert len(rtts) >= 10
    assert p95(rtts) < RTT_P95_S, f"chat round trips in another room: p95 {p95(rtts):.3f} s"
    assert await _metric(server, 'shopcast_resume_limited_total{reason="rate"}') >= errors
    # a resume too far back costs one fresh state, never the history
    far = await WsClient.open(server.url, FLOOD_ROOM, server.token(FLOOD_ROOM, "v", "subscribe"),
                              after_seq=last - 990)
    try:
        assert (await far.next())["type"] == "state"
    finally:
        await far.close()
    assert await _metric(server, 'shopcast_resume_limited_total{reason="size"}') >= 1


async def test_ws_signaling_resume_messages_are_limited(server: Any) -> None:
    """``/ws``: resume messages on a joined socket share the session's bucket."""
    bus = server.app[SIGNALING_KEY].bus
    last = await fill(bus, FLOOD_ROOM, 50)
    token = server.token(FLOOD_ROOM, "flooder", "subscribe")
    async with aiohttp.ClientSession() as http, \
            http.ws_connect(f"{server.url}/ws?token={token}") as ws:
        await ws.send_bytes(pack({"type": "join", "room": FLOOD_ROOM}))
        replies: list[dict[str, Any]] = []
        for i in range(30):
            await ws.send_bytes(pack({"type": "resume", "after_seq": last - 5, "cid": str(i)}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            replies.append(unpack((await ws.receive(timeout=5)).data))
            if sum(r.get("code") == "resume_limited" for r in replies) >= 30 - LIMITS.burst - 1 \
                    and replies[-1].get("cid") == "29":
                break
        served = [r for r in replies if r["type"] == "chat"]
        refused = [r for r in replies if r.get("code") == "resume_limited"]
        assert len(served) <= 5 * (LIMITS.burst + 1)
        assert len(refused) >= 30 - LIMITS.burst - 1


async def test_config_flags_reach_the_gateway(config: Config, server: Any) -> None:
    """``--resume-*`` flags are the gateway's limits (here: a burst of 1)."""
    gateway = server.app[SIGNALING_KEY].live
    assert gateway.resume_limits == ResumeLimits()
    config.resume_burst = 1
    from shopcast.control_plane import signaling_settings

    assert signaling_settings(config).resume.burst == 1


async def test_reconnects_with_after_seq_are_limited_per_identity(server: Any) -> None:
    """A new socket per resume gets no fresh bucket: reconnects with ``after_seq`` share one
    per room and identity, refused before the upgrade with 429 and Retry-After."""
    bus = server.app[SIGNALING_KEY].bus
    last = await fill(bus, FLOOD_ROOM, 150)
    token = server.token(FLOOD_ROOM, "flooder", "subscribe")
    url = f"{server.url}/ws/events/{FLOOD_ROOM}?token={token}&after_seq={last - 100}"
    opened = refused = 0
    async with aiohttp.ClientSession() as http:
        for _ in range(20):
            try:
                async with http.ws_connect(url) as ws:
                    opened += 1
                    await ws.receive(timeout=5)
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 429 and exc.headers is not None
                assert int(exc.headers["Retry-After"]) >= 1
                refused += 1
        async with http.get(url) as response:
            assert response.status == 429
            assert (await response.json())["error"]["code"] == "resume_limited"
    assert opened <= LIMITS.burst + 1 and refused >= 20 - LIMITS.burst - 1
    other = await WsClient.open(server.url, FLOOD_ROOM, server.token(FLOOD_ROOM, "v", "subscribe"),
                                after_seq=last - 1)
    try:
        assert (await other.next())["seq"] == last
    finally:
        await other.close()
