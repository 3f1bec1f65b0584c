"""The event bus on both backends: per-room seq, order, history, resume and slow consumers."""

from __future__ import annotations

import asyncio

import pytest

from signaling.backends import open_backends
from signaling.bus import Bus, Event
from signaling.bus import base as bus_base

pytest_plugins = ["store_fixtures"]  # backend, store, bus: memory and redis


async def take(sub: bus_base.Subscription, n: int) -> list[Event]:
    return [await asyncio.wait_for(sub.get(), 5.0) for _ in range(n)]


async def test_seq_is_per_room_and_increasing(bus: Bus) -> None:
    a1 = await bus.publish("a", {"type": "chat", "text": "hi"})
    a2 = await bus.publish("a", {"type": "chat", "text": "there"})
    b1 = await bus.publish("b", {"type": "like"})
    assert (a1.seq, a2.seq, b1.seq) == (1, 2, 1)
    assert a2.data == {"type": "chat", "text": "there", "seq": 2}
    assert await bus.last_seq("a") == 2 and await bus.last_seq("zzz") == 0


async def test_subscribers_get_events_in_order(bus: Bus) -> None:
    async with bus.subscribe("r") as s1, bus.subscribe("r") as s2, bus.subscribe("x") as other:
        for i in range(20):
            await bus.publish("r", {"type": "chat", "n": i, "blob": b"\x00\x01"})
        for sub in (s1, s2):
            events = await take(sub, 20)
            assert [e.seq for e in events] == list(range(1, 21))
            assert [e.data["n"] for e in events] == list(range(20))
            assert events[0].data["blob"] == b"\x00\x01"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(other.get(), 0.1)


async def test_packed_is_the_msgpack_of_the_event(bus: Bus) -> None:
    async with bus.subscribe("r") as sub:
        await bus.publish("r", {"type": "gift", "value": 5})
        (event,) = await take(sub, 1)
    assert bus_base.unpack(event.packed) == {"type": "gift", "value": 5, "seq": 1}
    assert event.type == "gift"


async def test_resume_after_seq_gets_exactly_the_missed(bus: Bus) -> None:
    for i in range(10):
        await bus.publish("r", {"type": "chat", "n": i})
    async with bus.subscribe("r", after_seq=6) as sub:
        await bus.publish("r", {"type": "chat", "n": 10})
        events = await take(sub, 5)
        assert [e.seq for e in events] == [7, 8, 9, 10, 11]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.1)


async def test_history_is_bounded(bus: Bus) -> None:
    for i in range(150):  # the fixtures keep 100
        await bus.publish("r", {"type": "chat", "n": i})
    assert [e.seq for e in await bus.history("r", 100)] == list(range(101, 151))
    assert [e.seq for e in await bus.history("r", 140)] == list(range(141, 151))
    assert [e.seq for e in await bus.history("r", 140, limit=3)] == [141, 142, 143]
    kept = await bus.history("r", 0)
    assert kept[-1].seq == 150 and 100 <= len(kept) <= 150  # Redis trims approximately
    assert await bus.history("r", 150) == [] and await bus.history("none") == []


async def test_slow_subscriber_drops_then_refills_from_history(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_base, "SUBSCRIPTION_QUEUE", 5)
    async with bus.subscribe("r") as slow, bus.subscribe("r") as other:
        for i in range(30):
            await bus.publish("r", {"type": "chat", "n": i})
        await asyncio.sleep(0.2)  # let Redis deliver (memory is synchronous)
        assert slow.dropped == 25
        events = await take(slow, 5)
        await bus.publish("r", {"type": "chat", "n": 30})  # reveals the gap
        events += await take(slow, 26)
        assert [e.seq for e in events] == list(range(1, 32))
        assert other.dropped == 26  # never read: it drops the 31st too, alone


async def test_event_needs_a_type(bus: Bus) -> None:
    with pytest.raises(ValueError):
        await bus.publish("r", {"text": "no type"})
    assert await bus.last_seq("r") == 0


async def test_topics_carry_control_messages(bus: Bus) -> None:
    async with bus.listen("node:n1") as sub:
        await bus.notify("node:n1", {"op": "kick", "room": "r"})
        await bus.notify("node:n2", {"op": "ignored"})
        message = await asyncio.wait_for(sub.get(), 5)
        assert message.data == {"op": "kick", "room": "r"}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sub.get(), 0.1)
    assert bus.subscriptions == 0


async def test_many_concurrent_publishers_keep_one_order(bus: Bus) -> None:
    async with bus.subscribe("r") as sub:
        await asyncio.gather(*(bus.publish("r", {"type": "like", "i": i}) for i in range(500)))
        events = await take(sub, 500)
    assert [e.seq for e in events] == list(range(1, 501))
    assert sorted(e.data["i"] for e in events) == list(range(500))


async def test_redis_bus_crosses_processes(redis_server: str, prefix: str) -> None:
    """Two buses on one Redis are two processes: events and seq are shared."""
    _, bus_a = open_backends(redis_server, prefix)
    store_b, bus_b = open_backends(redis_server, prefix)
    await bus_a.start()
    await bus_b.start()
    try:
        async with bus_b.subscribe("r") as sub:
            await bus_a.publish("r", {"type": "chat", "text": "from a"})
            await bus_b.publish("r", {"type": "chat", "text": "from b"})
            events = await take(sub, 2)
        assert [(e.seq, e.data["text"]) for e in events] == [(1, "from a"), (2, "from b")]
    finally:
        await bus_a.close()
        await bus_b.close()
        await store_b.close()
