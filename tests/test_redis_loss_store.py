"""Redis outages and data loss (issue 14 #4), the pieces without a whole server: the seq epoch
in ``state`` and resumes, client events during an outage, a lost seq starting a new epoch, the
data-loss watch, the persistence check at startup, likes kept through an outage; on a
redis-server killed with SIGKILL and started again (``redis_restart``)."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from live_helpers import VIEWER, make_gateway, send
from waiting import wait_for

from signaling.backends import open_backends
from signaling.bus import Bus
from signaling.errors import StoreUnavailable
from signaling.live import schema
from signaling.live.cohosts import stage
from signaling.live.schema import event
from signaling.service import Signaling, SignalingSettings
from signaling.store import NodeRecord, Store
from signaling.store.durability import DataLossWatch, VolatileRedis, require_persistence
from signaling.store.redis import RedisStore

if TYPE_CHECKING:
    from redis_restart import RedisProcess


pytest_plugins = ["store_fixtures", "redis_restart"]

async def test_state_carries_the_epoch_and_a_resume_of_another_epoch_gets_a_fresh_state(
    store: Store, bus: Bus,
) -> None:
    gateway = make_gateway(store, bus)
    await store.create_room("r")
    assert (await gateway.state("r"))["epoch"] == (await bus.position("r"))[0]
    for i in range(3):
        await bus.publish("r", event("chat", id=f"m{i}", identity="a", name="a", text="hi",
                                     ts=i))
    epoch, seq = await bus.position("r")
    state = await gateway.state("r")
    assert epoch and (state["epoch"], state["seq"]) == (epoch, seq) == (epoch, 3)
    same = await send(gateway, VIEWER, type="resume", after_seq=1, epoch=epoch)
    assert [e["seq"] for e in same] == [2, 3]
    other = await send(gateway, VIEWER, type="resume", after_seq=1, epoch="another")
    assert [e["type"] for e in other] == ["state"] and other[0]["epoch"] == epoch
    assert await gateway.replay("r", 1, "another") is None
    assert len(await gateway.replay("r", 1) or []) == 2  # no epoch named: as before


async def test_a_client_event_during_an_outage_is_refused_with_store_unavailable(
    redis_proc: RedisProcess, prefix: str,
) -> None:
    store, bus = open_backends(redis_proc.url, prefix)
    await store.start()
    await bus.start()
    try:
        gateway = make_gateway(store, bus)
        await store.create_room("r")
        redis_proc.kill()
        replies = await send(gateway, VIEWER, type="chat", text="hello", cid="c1")
        assert replies == [{"type": "error", "code": "store_unavailable", "cid": "c1",
                            "message": StoreUnavailable().message}]
        with pytest.raises(StoreUnavailable) as refused:
            await store.get_room("r")
        assert (refused.value.status, refused.value.retry_after_s) == (503, 2)
        redis_proc.start()  # from its AOF
        await wait_for_answer(store)
        assert await store.get_room("r") is not None
    finally:
        await bus.close()
        await store.close()



async def test_a_lost_seq_starts_a_new_epoch_and_a_subscriber_resyncs(
    redis_server: str, prefix: str,
) -> None:
    store, bus = open_backends(redis_server, prefix)
    await store.start()
    await bus.start()
    try:
        await store.create_room("r")
        await bus.publish("r", {"type": "test", "n": 0})
        first, _ = await bus.position("r")
        async with bus.subscribe("r", after_seq=1, epoch=first) as sub:
            await bus.publish("r", {"type": "test", "n": 1})
            assert (await asyncio.wait_for(sub.get(), 5)).seq == 2
            await wipe(redis_server, prefix)
            published = [await bus.publish("r", {"type": "test", "n": n}) for n in (2, 3)]
            assert [e.seq for e in published] == [1, 2]
            second = published[0].epoch
            assert second and second != first and (await bus.position("r")) == (second, 2)
            resync = await asyncio.wait_for(sub.get(), 5)
            assert resync.data == {"type": "resync", "epoch": second}
            schema.event("resync", epoch=second)  # what the schema declares
            after = [await asyncio.wait_for(sub.get(), 5) for _ in range(2)]
            assert [(e.seq, e.data["n"]) for e in after] == [(1, 2), (2, 3)]
            assert sub.epoch == second and sub.resyncs == 1
            assert [e.epoch for e in await bus.history("r")] == [second, second]
    finally:
        await bus.close()
        await store.close()


async def test_a_data_loss_is_noticed_and_the_live_sessions_are_recorded_again(
    redis_server: str, prefix: str,
) -> None:
    signaling = Signaling(SignalingSettings(secret="s" * 32, redis_url=redis_server,
                                            redis_prefix=prefix, node_id="N_one"))
    await signaling.start()
    watch = DataLossWatch(signaling.store, interval_s=3600)  # checked by hand here
    watch.on_loss(signaling.reporter.restore)
    signaling.reporter.claims_rooms = True  # as on an SFU node of a multi-node deployment
    try:
        await watch.start()
        await signaling.store.heartbeat(NodeRecord("N_one", "http://n1"), 10_000)
        reporter = signaling.reporter
        reporter.joined("r", "PA_anchor", "anchor", "whip", role="publisher", slot=0)
        reporter.track_published("r", "PA_anchor", "TR_v", "video", "H264")
        reporter.track_published("r", "PA_anchor", "TR_a", "audio", "opus")
        reporter.joined("r", "PA_viewer", "viewer", "whep")
        reporter.joined("r", "PA_gone", "gone", "flv")
        reporter.track_unpublished("r", "PA_anchor", "TR_a")
        reporter.left("r", "PA_gone")
        await reporter.drain()
        await signaling.store.claim_room_node("r", "N_one")
        assert not await watch.check()  # nothing lost yet

        await wipe(redis_server, prefix)
        assert await signaling.store.get_room("r") is None
        assert await watch.check()
        assert watch.losses == 1 and watch.epoch == await signaling.store.data_epoch("x")
        room = await signaling.store.get_room("r")
        assert room is not None and room.node == "N_one"
        sessions = {p.sid: p for p in await signaling.store.list_participants("r")}
        assert set(sessions) == {"PA_anchor", "PA_viewer"}
        assert [t.sid for t in sessions["PA_anchor"].tracks] == ["TR_v"]
        assert (await signaling.store.room_counts("r")).viewers == 1
        assert [p["sid"] for p in await stage(signaling.store, "r")] == ["PA_anchor"]
        assert not await watch.check()  # repaired once
    finally:
        await watch.close()
        await signaling.close()


@pytest.mark.parametrize("redis_proc", ["aof", "volatile", "renamed"], indirect=True)
async def test_persistence_is_read_with_config_get_and_a_volatile_redis_is_refused(
    redis_proc: RedisProcess, prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    store, _ = open_backends(redis_proc.url, prefix)
    assert isinstance(store, RedisStore)
    try:
        found = await store.persistence()
        if redis_proc.extra:  # CONFIG refused: unknown, logged, accepted
            assert not found.known
            assert not (await require_persistence(store, allow_volatile=False)).known
            assert "CONFIG GET refused" in caplog.text
        elif redis_proc.appendonly:
            assert found.known and found.aof and found.durable
            assert (await require_persistence(store, allow_volatile=False)).durable
        else:
            assert found.known and not found.durable and found.snapshots == ""
            with pytest.raises(VolatileRedis, match="--allow-volatile-redis"):
                await require_persistence(store, allow_volatile=False)
            assert not (await require_persistence(store, allow_volatile=True)).durable
    finally:
        await store.close()


async def test_likes_tapped_during_an_outage_are_counted_once_redis_is_back(
    redis_proc: RedisProcess, prefix: str,
) -> None:
    store, bus = open_backends(redis_proc.url, prefix)
    await store.start()
    await bus.start()
    gateway = make_gateway(store, bus)
    try:
        await store.create_room("r")
        assert await send(gateway, VIEWER, type="like", count=5) == []
        await wait_for(lambda: gateway.likes.coalescer.flushes >= 1, 5, "first flush")
        redis_proc.kill()
        assert await send(gateway, VIEWER, type="like", count=7) == []  # taken locally
        with pytest.raises(StoreUnavailable):  # a flush that claimed its round just before
            await gateway.likes._flush("r")
        assert gateway.likes._pending == {"r": 7}  # kept for the next flush
        await asyncio.sleep(0.6)  # two flush intervals meet the outage
        redis_proc.start()  # from its AOF
        await wait_for_answer(store)
        deadline = time.monotonic() + 5
        while await gateway.likes.total("r") != 12:
            assert time.monotonic() < deadline, await gateway.likes.total("r")
            await asyncio.sleep(0.1)
    finally:
        await gateway.close()
        await bus.close()
        await store.close()


async def wait_for_answer(store: Store, limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            await store.list_nodes()
            return
        except StoreUnavailable:
            assert time.monotonic() < deadline, "redis did not come back"
            await asyncio.sleep(0.1)


async def wipe(redis_url: str, prefix: str) -> None:
    """What an empty restart does to one deployment: every key of its prefix gone."""
    client = aioredis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
