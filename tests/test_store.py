"""The Store's semantics, run against both backends: what one does, the other must do too."""

from __future__ import annotations

import asyncio
import time

import pytest

from signaling.store import (
    ConsumeOutcome,
    NodeRecord,
    ParticipantRecord,
    RoomNotFound,
    Store,
    TrackRecord,
    Transport,
)

pytest_plugins = ["store_fixtures"]  # backend, store, bus: memory and redis


def participant(sid: str, identity: str = "", transport: Transport = Transport.WHEP,
                **kw: object) -> ParticipantRecord:
    return ParticipantRecord(
        sid=sid, identity=identity or sid, transport=transport,
        joined_at=time.time(), **kw,  # type: ignore[arg-type]
    )


async def test_create_room_is_idempotent_and_keeps_the_first(store: Store) -> None:
    room, created = await store.create_room("r1", metadata={"title": "Spring sale", "tags": []})
    assert created and room.name == "r1" and room.sid.startswith("RM_")
    again, created = await store.create_room("r1", metadata={"title": "other"})
    assert not created and again == room
    assert again.metadata == {"title": "Spring sale", "tags": []}
    assert await store.get_room("r1") == room
    assert await store.get_room("nope") is None


async def test_list_rooms_oldest_first_and_metadata_update(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.create_room(name)
    assert [r.name for r in await store.list_rooms()] == ["a", "b", "c"]
    updated = await store.set_room_metadata("b", {"k": [1, 2]})
    assert updated is not None and updated.metadata == {"k": [1, 2]}
    assert await store.set_room_metadata("zzz", {}) is None


async def test_participants_counts_and_tracks(store: Store) -> None:
    await store.create_room("r")
    assert await store.add_participant("r", participant("p1", "anchor", Transport.WHIP,
                                                        role="publisher", metadata={"a": 1}))
    assert await store.add_participant("r", participant("v1", "viewer"))
    assert await store.add_participant("r", participant("v2", "viewer", Transport.FLV))
    assert not await store.add_participant("r", participant("v2", "viewer", Transport.FLV))
    counts = await store.room_counts("r")
    assert counts.by_transport == {"whip": 1, "whep": 1, "flv": 1}
    assert (counts.participants, counts.viewers) == (3, 2)

    assert await store.add_track("r", "p1", TrackRecord("TR_v", "video", "H264"))
    assert await store.add_track("r", "p1", TrackRecord("TR_a", "audio", "opus"))
    assert not await store.add_track("r", "gone", TrackRecord("TR_x", "audio"))
    muted = await store.set_track_muted("r", "p1", "TR_a", True)
    assert muted == TrackRecord("TR_a", "audio", "opus", muted=True)
    assert await store.set_track_muted("r", "p1", "TR_nope", True) is None

    p1 = await store.get_participant("r", "p1")
    assert p1 is not None and p1.metadata == {"a": 1} and p1.role == "publisher"
    assert [t.sid for t in p1.tracks] == ["TR_a", "TR_v"] and p1.tracks[0].muted
    assert await store.set_participant_metadata("r", "v1", {"seat": 3})
    assert not await store.set_participant_metadata("r", "nobody", {})
    listed = await store.list_participants("r")
    assert [p.sid for p in listed] == ["p1", "v1", "v2"]
    assert listed[1].metadata == {"seat": 3}

    removed = await store.remove_track("r", "p1", "TR_v")
    assert removed is not None and removed.kind == "video"
    assert await store.remove_track("r", "p1", "TR_v") is None

    left = await store.remove_participant("r", "p1")
    assert left is not None and [t.sid for t in left.tracks] == ["TR_a"]
    assert await store.remove_participant("r", "p1") is None
    assert (await store.room_counts("r")).by_transport == {"whep": 1, "flv": 1}


async def test_participant_needs_a_room(store: Store) -> None:
    with pytest.raises(RoomNotFound):
        await store.add_participant("none", participant("x"))
    assert await store.list_participants("none") == []


async def test_delete_room_returns_everything_once(store: Store) -> None:
    await store.create_room("r")
    await store.add_participant("r", participant("p1", transport=Transport.WHIP))
    await store.add_track("r", "p1", TrackRecord("TR_v", "video"))
    await store.add_participant("r", participant("v1"))
    results = await asyncio.gather(store.delete_room("r"), store.delete_room("r"))
    done = [r for r in results if r is not None]
    assert len(done) == 1
    room, participants = done[0]
    assert room.name == "r" and [p.sid for p in participants] == ["p1", "v1"]
    assert participants[0].tracks == (TrackRecord("TR_v", "video"),)
    assert await store.get_room("r") is None and await store.list_rooms() == []
    assert (await store.room_counts("r")).participants == 0
    # a re-created room starts empty
    await store.create_room("r")
    assert await store.list_participants("r") == []
    assert await store.get_participant("r", "p1") is None


async def test_concurrent_leaves_report_each_participant_once(store: Store) -> None:
    await store.create_room("r")
    for i in range(50):
        await store.add_participant("r", participant(f"s{i}"))
    removals = [store.remove_participant("r", f"s{i % 50}") for i in range(200)]
    results = await asyncio.gather(*removals)
    assert sum(r is not None for r in results) == 50
    assert (await store.room_counts("r")).participants == 0


async def test_node_registry_and_room_claims(store: Store) -> None:
    await store.heartbeat(NodeRecord("n1", "http://n1", viewers=3), ttl_ms=60_000)
    await store.heartbeat(NodeRecord("n2", "http://n2"), ttl_ms=60_000)
    nodes = await store.list_nodes()
    assert [n.id for n in nodes] == ["n1", "n2"] and nodes[0].viewers == 3
    assert nodes[0].seen_at > 0

    with pytest.raises(RoomNotFound):
        await store.claim_room_node("r", "n1")
    await store.create_room("r")
    claims = await asyncio.gather(*(store.claim_room_node("r", n) for n in ["n1", "n2"] * 20))
    assert len(set(claims)) == 1
    owner = claims[0]
    room = await store.get_room("r")
    assert room is not None and room.node == owner
    other = "n2" if owner == "n1" else "n1"
    assert not await store.release_room_node("r", other)
    assert await store.release_room_node("r", owner)
    assert await store.claim_room_node("r", other) == other


async def test_dead_node_loses_its_rooms(store: Store) -> None:
    await store.heartbeat(NodeRecord("n1", "http://n1"), ttl_ms=100)
    await store.heartbeat(NodeRecord("n2", "http://n2"), ttl_ms=60_000)
    await store.create_room("r")
    assert await store.claim_room_node("r", "n1") == "n1"
    assert await store.claim_room_node("r", "n2") == "n1"
    await asyncio.sleep(0.25)
    assert [n.id for n in await store.list_nodes()] == ["n2"]
    assert await store.claim_room_node("r", "n2") == "n2"
    await store.remove_node("n2")
    assert await store.list_nodes() == []


async def test_counters_values_and_ttl(store: Store) -> None:
    assert await store.incr("r", "likes") == 1
    assert await store.incr("r", "likes", 4) == 5
    assert await store.get("r", "likes") == b"5"
    assert await store.incr("r", "rate", ttl_ms=100) == 1
    assert await store.incr("r", "rate", ttl_ms=100) == 2
    await asyncio.sleep(0.2)
    assert await store.incr("r", "rate", ttl_ms=100) == 1
    assert await store.put("r", "k", b"v1", only_if_absent=True)
    assert not await store.put("r", "k", b"v2", only_if_absent=True)
    assert await store.get("r", "k") == b"v1"
    assert await store.put("r", "k", b"v3")
    assert await store.get("r", "k") == b"v3"
    assert await store.delete("r", "k") and not await store.delete("r", "k")
    assert await store.get("other-scope", "likes") is None


async def test_hashes_and_leaderboard(store: Store) -> None:
    await store.hset("r", "products", "sku1", b'{"price":100}')
    await store.hset("r", "products", "sku2", b"\x00\xff")
    assert await store.hget("r", "products", "sku2") == b"\x00\xff"
    assert await store.hgetall("r", "products") == {"sku1": b'{"price":100}', "sku2": b"\x00\xff"}
    assert await store.hdel("r", "products", "sku1") and not await store.hdel("r", "products", "x")
    assert await store.hget("r", "products", "sku1") is None
    await store.zincr("r", "gifts", "alice", 10)
    await store.zincr("r", "gifts", "bob", 30)
    assert await store.zincr("r", "gifts", "alice", 25) == 35
    await store.zincr("r", "gifts", "carol", 30)
    assert await store.ztop("r", "gifts", 3) == [("alice", 35.0), ("carol", 30.0), ("bob", 30.0)]
    assert await store.ztop("r", "gifts", 0) == []


async def test_pool_checks_window_stock_limit_and_idempotency(store: Store) -> None:
    now = 1_000_000
    assert (await store.consume("r", "sku1", holder="a", qty=1, limit=0, now_ms=now,
                                record=b"x")).outcome is ConsumeOutcome.UNKNOWN
    await store.open_pool("r", "sku1", 5, opens_at_ms=now, closes_at_ms=now + 1000)

    async def buy(holder: str, qty: int = 1, key: str = "", at: int = now) -> object:
        return await store.consume("r", "sku1", holder=holder, qty=qty, limit=2, now_ms=at,
                                   record=f"{holder}:{key}".encode(), idempotency_key=key)

    first = await buy("a", key="k1")
    assert first.outcome is ConsumeOutcome.OK and (first.remaining, first.held) == (4, 1)
    again = await buy("a", key="k1")
    assert again.outcome is ConsumeOutcome.DUPLICATE and again.record == b"a:k1"
    assert again.ok and again.remaining == 4
    assert (await buy("a", qty=2)).outcome is ConsumeOutcome.LIMIT
    assert (await buy("a", key="k2")).outcome is ConsumeOutcome.OK
    assert (await buy("b", qty=2)).outcome is ConsumeOutcome.OK
    assert (await buy("c", qty=2)).outcome is ConsumeOutcome.EXHAUSTED
    assert (await buy("c", at=now - 1)).outcome is ConsumeOutcome.CLOSED
    assert (await buy("c", at=now + 1000)).outcome is ConsumeOutcome.CLOSED
    last = await buy("c")
    assert last.outcome is ConsumeOutcome.OK and last.remaining == 0
    state = await store.pool_state("r", "sku1")
    assert state is not None and (state.remaining, state.initial, state.consumed) == (0, 5, 5)
    assert await store.pool_ledger("r", "sku1") == [b"a:k1", b"a:k2", b"b:", b"c:"]
    with pytest.raises(ValueError):
        await buy("d", qty=0)
    # reopening resets tallies and the ledger
    await store.open_pool("r", "sku1", 1)
    assert (await buy("a", qty=1, at=0)).outcome is ConsumeOutcome.OK
    assert await store.pool_ledger("r", "sku1") == [b"a:"]


async def test_concurrent_consume_never_oversells(store: Store) -> None:
    """2,000 attempts by 500 buyers (limit 2, each retrying its keys) on 100 units."""
    await store.open_pool("r", "flash", 100)
    attempts = [
        store.consume("r", "flash", holder=f"u{i % 500}", qty=1, limit=2, now_ms=1,
                      record=f"u{i % 500}/{i // 1000}".encode(), idempotency_key=f"k{i // 1000}")
        for i in range(2000)
    ]
    results = await asyncio.gather(*attempts)
    ok = [r for r in results if r.outcome is ConsumeOutcome.OK]
    assert len(ok) == 100
    ledger = await store.pool_ledger("r", "flash")
    assert len(ledger) == 100 and len(set(ledger)) == 100
    per_buyer: dict[str, int] = {}
    for record in ledger:
        buyer = record.decode().split("/")[0]
        per_buyer[buyer] = per_buyer.get(buyer, 0) + 1
    assert max(per_buyer.values()) <= 2
    state = await store.pool_state("r", "flash")
    assert state is not None and state.remaining == 0


async def test_concurrent_increments_and_claims_are_exact(store: Store) -> None:
    values = await asyncio.gather(*(store.incr("r", "n") for _ in range(500)))
    assert sorted(values) == list(range(1, 501))
    claims = await asyncio.gather(
        *(store.put("r", "lock", str(i).encode(), only_if_absent=True) for i in range(500))
    )
    assert claims.count(True) == 1


async def test_delete_if_empty_keeps_an_occupied_room(store: Store) -> None:
    await store.create_room("r", auto=True)
    await store.add_participant("r", participant("v1"))
    assert await store.delete_room("r", if_empty=True) is None
    assert await store.get_room("r") is not None
    await store.remove_participant("r", "v1")
    deleted = await store.delete_room("r", if_empty=True)
    assert deleted is not None and deleted[0].auto and deleted[1] == []
    assert await store.list_rooms() == []
