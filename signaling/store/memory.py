"""The in-memory Store: one process, no Redis, the same semantics as ``RedisStore``.

Atomicity comes from asyncio itself: no method awaits between reading and writing, so no other
coroutine can interleave. Expiring keys (TTL values, idempotency replies) are dropped when
touched, and a sweep once a second drops the ones nobody touches again (a heap by expiry, at
most ``SWEEP_BATCH`` per pass), so a process does not keep every rate-limit key and reply it
ever wrote.
"""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from common.tasks import stop_tasks
from signaling.store.base import RoomNotFound, Store
from signaling.store.records import (
    ConsumeOutcome,
    ConsumeResult,
    JsonObject,
    NodeRecord,
    ParticipantRecord,
    PoolState,
    RoomCounts,
    RoomRecord,
    TrackRecord,
)

SWEEP_INTERVAL_S = 1.0
SWEEP_BATCH = 10_000  # expired keys dropped per pass at most, so one pass stays short
_VALUES, _REPLIES = 0, 1  # which table an expiry in the heap belongs to


@dataclass
class _Room:
    record: RoomRecord
    participants: dict[str, ParticipantRecord] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Pool:
    remaining: int
    initial: int
    opens_at_ms: int
    closes_at_ms: int
    held: dict[str, int] = field(default_factory=dict)
    ledger: list[bytes] = field(default_factory=list)


class MemoryStore(Store):
    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._nodes: dict[str, tuple[NodeRecord, float]] = {}  # id -> (record, expires monotonic)
        self._values: dict[tuple[str, str], tuple[bytes | int, float]] = {}  # (v, expires|0)
        self._hashes: dict[tuple[str, str], dict[str, bytes]] = {}
        self._zsets: dict[tuple[str, str], dict[str, float]] = {}
        self._pools: dict[tuple[str, str], _Pool] = {}
        # idempotency: (scope, holder, key) -> (record, request, expiry)
        self._replies: dict[tuple[str, str, str], tuple[bytes, bytes, float]] = {}
        # (expires monotonic, table, key) of every expiring write; stale ones are skipped
        self._expiries: list[tuple[float, int, tuple[str, ...]]] = []
        self._sweeper: asyncio.Task[None] | None = None
        # scope -> (table, key) of every key written in it: _values 0, _hashes 1, _zsets 2,
        # _pools 3, _replies 4 (see drop_room_data)
        self._scope_keys: dict[str, set[tuple[int, tuple[str, ...]]]] = {}
        self._data_epoch = ""

    async def data_epoch(self, candidate: str) -> str:
        if not self._data_epoch:  # this process's data: lost only with the process
            self._data_epoch = candidate
        return self._data_epoch

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        await stop_tasks([self._sweeper])
        self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.sweep()

    def sweep(self, budget: int = SWEEP_BATCH) -> int:
        """Drop expired values and idempotency replies, oldest expiry first, at most ``budget``
        heap entries; returns how many keys were dropped. A key written again since (a later
        expiry, or none) is kept: its own entry comes later, or it does not expire."""
        now = time.monotonic()
        dropped = 0
        heap = self._expiries
        while heap and heap[0][0] <= now and budget > 0:
            budget -= 1
            _, table, key = heapq.heappop(heap)
            entries: dict[Any, tuple[Any, ...]] = (
                self._values if table == _VALUES else self._replies)
            entry = entries.get(key)
            if entry is not None and 0 < entry[-1] <= now:
                del entries[key]
                dropped += 1
                scope_keys = self._scope_keys.get(key[0])  # drop_room_data's index too
                if scope_keys is not None:
                    scope_keys.discard((0 if table == _VALUES else 4, key))
                    if not scope_keys:
                        del self._scope_keys[key[0]]
        return dropped

    # --- rooms -----------------------------------------------------------------------------

    async def create_room(
        self, name: str, *, metadata: JsonObject | None = None, auto: bool = False
    ) -> tuple[RoomRecord, bool]:
        existing = self._rooms.get(name)
        if existing is not None:
            return existing.record, False
        record = RoomRecord(
            name=name, sid="RM_" + uuid.uuid4().hex[:12], created_at=time.time(),
            metadata=dict(metadata or {}), auto=auto,
        )
        self._rooms[name] = _Room(record)
        return record, True

    async def get_room(self, name: str) -> RoomRecord | None:
        room = self._rooms.get(name)
        return None if room is None else room.record

    async def list_rooms(
        self, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[RoomRecord]:
        records = sorted(
            (r.record for r in self._rooms.values()
             if after is None or (r.record.created_at, r.record.name) > after),
            key=lambda r: (r.created_at, r.name),
        )
        return records[:limit] if limit > 0 else records

    async def set_room_metadata(self, name: str, metadata: JsonObject) -> RoomRecord | None:
        room = self._rooms.get(name)
        if room is None:
            return None
        room.record = replace(room.record, metadata=dict(metadata))
        return room.record

    async def delete_room(
        self, name: str, *, if_empty: bool = False
    ) -> tuple[RoomRecord, list[ParticipantRecord]] | None:
        room = self._rooms.get(name)
        if room is None or (if_empty and room.participants):
            return None
        del self._rooms[name]
        return room.record, sorted(room.participants.values(), key=lambda p: (p.joined_at, p.sid))

    async def drop_room_data(self, name: str) -> int:
        if name in self._rooms:
            return 0
        tables: tuple[dict[Any, Any], ...] = (
            self._values, self._hashes, self._zsets, self._pools, self._replies
        )
        dropped = 0
        for table, key in self._scope_keys.pop(name, ()):
            dropped += tables[table].pop(key, None) is not None
        return dropped

    def _index(self, table: int, key: tuple[str, ...]) -> None:
        """Remember a key of the scope ``key[0]``, so closing the room finds it without a
        scan of every table."""
        self._scope_keys.setdefault(key[0], set()).add((table, key))

    async def room_counts(self, name: str) -> RoomCounts:
        room = self._rooms.get(name)
        counts = {} if room is None else {t: n for t, n in room.counts.items() if n}
        return RoomCounts(counts)

    # --- participants ----------------------------------------------------------------------

    async def add_participant(self, room: str, participant: ParticipantRecord) -> bool:
        state = self._rooms.get(room)
        if state is None:
            raise RoomNotFound(room)
        if participant.sid in state.participants:
            return False
        state.participants[participant.sid] = replace(participant, tracks=())
        transport = participant.transport.value
        state.counts[transport] = state.counts.get(transport, 0) + 1
        return True

    async def remove_participant(self, room: str, sid: str) -> ParticipantRecord | None:
        state = self._rooms.get(room)
        if state is None:
            return None
        participant = state.participants.pop(sid, None)
        if participant is not None:
            state.counts[participant.transport.value] -= 1
        return participant

    async def get_participant(self, room: str, sid: str) -> ParticipantRecord | None:
        state = self._rooms.get(room)
        return None if state is None else state.participants.get(sid)

    async def list_participants(self, room: str) -> list[ParticipantRecord]:
        state = self._rooms.get(room)
        if state is None:
            return []
        return sorted(state.participants.values(), key=lambda p: (p.joined_at, p.sid))

    def _update(self, room: str, sid: str, **changes: object) -> bool:
        state = self._rooms.get(room)
        if state is None or sid not in state.participants:
            return False
        state.participants[sid] = replace(state.participants[sid], **changes)  # type: ignore[arg-type]
        return True

    async def set_participant_metadata(self, room: str, sid: str, metadata: JsonObject) -> bool:
        return self._update(room, sid, metadata=dict(metadata))

    def _tracks(self, room: str, sid: str) -> dict[str, TrackRecord] | None:
        participant = self._rooms[room].participants.get(sid) if room in self._rooms else None
        return None if participant is None else {t.sid: t for t in participant.tracks}

    def _set_tracks(self, room: str, sid: str, tracks: dict[str, TrackRecord]) -> None:
        self._update(room, sid, tracks=tuple(sorted(tracks.values(), key=lambda t: t.sid)))

    async def add_track(self, room: str, sid: str, track: TrackRecord) -> bool:
        tracks = self._tracks(room, sid)
        if tracks is None:
            return False
        tracks[track.sid] = track
        self._set_tracks(room, sid, tracks)
        return True

    async def remove_track(self, room: str, sid: str, track_sid: str) -> TrackRecord | None:
        tracks = self._tracks(room, sid)
        if tracks is None or track_sid not in tracks:
            return None
        track = tracks.pop(track_sid)
        self._set_tracks(room, sid, tracks)
        return track

    async def set_track_muted(
        self, room: str, sid: str, track_sid: str, muted: bool
    ) -> TrackRecord | None:
        tracks = self._tracks(room, sid)
        if tracks is None or track_sid not in tracks:
            return None
        tracks[track_sid] = replace(tracks[track_sid], muted=muted)
        self._set_tracks(room, sid, tracks)
        return tracks[track_sid]

    # --- node registry ---------------------------------------------------------------------

    async def heartbeat(self, node: NodeRecord, ttl_ms: int) -> None:
        record = replace(node, seen_at=time.time())
        self._nodes[node.id] = (record, time.monotonic() + ttl_ms / 1000)

    def _alive(self, node_id: str) -> bool:
        entry = self._nodes.get(node_id)
        if entry is None:
            return False
        if entry[1] <= time.monotonic():
            del self._nodes[node_id]
            return False
        return True

    async def list_nodes(self) -> list[NodeRecord]:
        return sorted(
            (self._nodes[n][0] for n in list(self._nodes) if self._alive(n)), key=lambda n: n.id
        )

    async def remove_node(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def claim_room_node(self, room: str, node_id: str) -> str:
        state = self._rooms.get(room)
        if state is None:
            raise RoomNotFound(room)
        owner = state.record.node
        if owner and self._alive(owner):
            return owner
        state.record = replace(state.record, node=node_id)
        return node_id

    async def release_room_node(self, room: str, node_id: str) -> bool:
        state = self._rooms.get(room)
        if state is None or state.record.node != node_id:
            return False
        state.record = replace(state.record, node="")
        return True

    # --- generic atomic primitives ---------------------------------------------------------

    def _load(self, scope: str, key: str) -> bytes | int | None:
        entry = self._values.get((scope, key))
        if entry is None:
            return None
        if entry[1] and entry[1] <= time.monotonic():
            del self._values[(scope, key)]
            return None
        return entry[0]

    def _store(self, scope: str, key: str, value: bytes | int, ttl_ms: int = 0) -> None:
        expires = time.monotonic() + ttl_ms / 1000 if ttl_ms > 0 else 0.0
        self._values[(scope, key)] = (value, expires)
        if expires:
            heapq.heappush(self._expiries, (expires, _VALUES, (scope, key)))
        self._index(0, (scope, key))

    async def incr(self, scope: str, key: str, by: int = 1, ttl_ms: int = 0) -> int:
        current = self._load(scope, key)
        if current is None:
            self._store(scope, key, by, ttl_ms)
            return by
        if not isinstance(current, int):
            raise TypeError(f"{scope}/{key} is not a counter")
        self._values[(scope, key)] = (current + by, self._values[(scope, key)][1])
        return current + by

    async def put(
        self, scope: str, key: str, value: bytes, *, ttl_ms: int = 0, only_if_absent: bool = False
    ) -> bool:
        if only_if_absent and self._load(scope, key) is not None:
            return False
        self._store(scope, key, bytes(value), ttl_ms)
        return True

    async def get(self, scope: str, key: str) -> bytes | None:
        value = self._load(scope, key)
        return str(value).encode() if isinstance(value, int) else value

    async def delete(self, scope: str, key: str) -> bool:
        found = self._load(scope, key) is not None
        self._values.pop((scope, key), None)
        return found

    async def hset(self, scope: str, key: str, field: str, value: bytes) -> None:
        self._hashes.setdefault((scope, key), {})[field] = bytes(value)
        self._index(1, (scope, key))

    async def hget(self, scope: str, key: str, field: str) -> bytes | None:
        return self._hashes.get((scope, key), {}).get(field)

    async def hgetall(self, scope: str, key: str) -> dict[str, bytes]:
        return dict(self._hashes.get((scope, key), {}))

    async def hdel(self, scope: str, key: str, field: str) -> bool:
        return self._hashes.get((scope, key), {}).pop(field, None) is not None

    async def zincr(self, scope: str, key: str, member: str, by: float) -> float:
        scores = self._zsets.setdefault((scope, key), {})
        self._index(2, (scope, key))
        scores[member] = scores.get(member, 0.0) + by
        return scores[member]

    async def ztop(self, scope: str, key: str, count: int) -> list[tuple[str, float]]:
        # Redis orders equal scores by member, descending, in ZREVRANGE: so do we
        ranked = sorted(self._zsets.get((scope, key), {}).items(), key=lambda i: (i[1], i[0]))
        return ranked[::-1][: max(count, 0)]

    async def open_pool(
        self, scope: str, pool: str, units: int, *, opens_at_ms: int = 0, closes_at_ms: int = 0
    ) -> None:
        self._pools[(scope, pool)] = _Pool(units, units, opens_at_ms, closes_at_ms)
        self._index(3, (scope, pool))

    async def consume(
        self,
        scope: str,
        pool: str,
        *,
        holder: str,
        qty: int,
        limit: int,
        now_ms: int,
        record: bytes,
        idempotency_key: str = "",
        idempotency_ttl_ms: int = 24 * 3600 * 1000,
        request: bytes = b"",
    ) -> ConsumeResult:
        if qty <= 0:
            raise ValueError("qty must be positive")
        idem = (scope, holder, idempotency_key)
        first = self._replies.get(idem) if idempotency_key else None
        if first is not None and first[2] > time.monotonic():
            state = self._pools.get((scope, pool))
            remaining = state.remaining if state else 0
            held = state.held.get(holder, 0) if state else 0
            if first[1] and request and first[1] != request:
                return ConsumeResult(ConsumeOutcome.KEY_REUSED, remaining, held)
            return ConsumeResult(ConsumeOutcome.DUPLICATE, remaining, held, first[0])
        state = self._pools.get((scope, pool))
        if state is None:
            return ConsumeResult(ConsumeOutcome.UNKNOWN, 0)
        held = state.held.get(holder, 0)
        outcome = _check(state, qty, limit, held, now_ms)
        if outcome is not ConsumeOutcome.OK:
            return ConsumeResult(outcome, state.remaining, held)
        state.remaining -= qty
        state.held[holder] = held + qty
        state.ledger.append(bytes(record))
        if idempotency_key:
            expires = time.monotonic() + idempotency_ttl_ms / 1000
            self._replies[idem] = (bytes(record), bytes(request), expires)
            heapq.heappush(self._expiries, (expires, _REPLIES, idem))
            self._index(4, idem)
        return ConsumeResult(ConsumeOutcome.OK, state.remaining, held + qty, bytes(record))

    async def pool_state(self, scope: str, pool: str) -> PoolState | None:
        state = self._pools.get((scope, pool))
        if state is None:
            return None
        return PoolState(
            state.remaining, state.initial, state.opens_at_ms, state.closes_at_ms,
            state.initial - state.remaining,
        )

    async def pool_ledger(self, scope: str, pool: str) -> list[bytes]:
        state = self._pools.get((scope, pool))
        return [] if state is None else list(state.ledger)


def _check(state: _Pool, qty: int, limit: int, held: int, now_ms: int) -> ConsumeOutcome:
    """The order of checks is part of the contract: window, then stock, then limit."""
    if now_ms < state.opens_at_ms or (state.closes_at_ms and now_ms >= state.closes_at_ms):
        return ConsumeOutcome.CLOSED
    if qty > state.remaining:
        return ConsumeOutcome.EXHAUSTED
    if limit and held + qty > limit:
        return ConsumeOutcome.LIMIT
    return ConsumeOutcome.OK
