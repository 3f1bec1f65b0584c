"""The Redis Store: shared state for several signaling processes and SFU nodes.

Key layout (``P`` is the configured prefix; ``{R}`` a room's hash tag) is documented in
docs/redis.md. Each racing read-modify-write is one Lua script from ``scripts``.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from signaling.store import scripts
from signaling.store.base import RoomNotFound, Store
from signaling.store.durability import Persistence
from signaling.store.outage import Outage, guard
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
    dumps,
)


class Keys:
    """Every Redis key and channel name ShopCast uses, in one place."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def room_tag(self, room: str) -> str:
        return f"{self.prefix}:{{{room}}}"

    def room(self, room: str) -> str:
        return self.room_tag(room) + ":room"

    def participants(self, room: str) -> str:
        return self.room_tag(room) + ":participants"

    def pmeta(self, room: str) -> str:
        return self.room_tag(room) + ":pmeta"

    def counts(self, room: str) -> str:
        return self.room_tag(room) + ":counts"

    def tracks(self, room: str, sid: str = "") -> str:
        return self.room_tag(room) + ":tracks:" + sid

    def seq(self, room: str) -> str:
        return self.room_tag(room) + ":seq"

    def stream_epoch(self, room: str) -> str:
        """The epoch of the room's seq: made again when the seq starts from nothing."""
        return self.room_tag(room) + ":epoch"

    def events(self, room: str) -> str:
        """Both the history stream and the pub/sub channel of a room's events."""
        return self.room_tag(room) + ":events"

    def scoped(self, scope: str, kind: str, key: str) -> str:
        return f"{self.room_tag(scope)}:{kind}:{key}"

    def scope_index(self, scope: str) -> str:
        """Every generic key written in the scope, so closing the room finds them all."""
        return self.room_tag(scope) + ":index"

    def idempotency(self, scope: str, holder: str, key: str) -> str:
        return f"{self.room_tag(scope)}:idem:{len(holder)}:{holder}:{key}"

    @property
    def rooms(self) -> str:
        return f"{self.prefix}:rooms"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def node(self, node_id: str = "") -> str:
        return f"{self.prefix}:node:{node_id}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}:topic:{name}"

    @property
    def data_epoch(self) -> str:
        """Written once when the deployment's data begin; its loss is the data's loss."""
        return f"{self.prefix}:epoch"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list[Any]) -> dict[str, bytes]:
    return {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}


def _room(fields: dict[str, bytes]) -> RoomRecord:
    data = json.loads(fields["record"])
    data["metadata"] = json.loads(fields.get("metadata") or b"{}")
    data["node"] = _text(fields.get("node") or b"")
    return RoomRecord.from_json(data)


def _participant(static: bytes, meta: bytes | None, tracks: dict[str, bytes]) -> ParticipantRecord:
    record = ParticipantRecord.from_json(json.loads(static))
    return record.with_parts(
        json.loads(meta or b"{}"), [TrackRecord.from_json(json.loads(t)) for t in tracks.values()]
    )


@guard()
class RedisStore(Store):
    def __init__(self, client: Redis, prefix: str = "shopcast",
                 outage: Outage | None = None) -> None:
        self.client = client
        self.outage = outage or Outage()  # shared with the bus on the same client
        self._r: Any = client  # redis-py's typed replies are str|bytes unions; ours are bytes
        self.keys = Keys(prefix)
        self._scripts = {
            name: client.register_script(getattr(scripts, name))
            for name in dir(scripts)
            if name.isupper()
        }

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._scripts[name](keys=keys, args=args)

    async def start(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        await self.client.aclose()

    async def data_epoch(self, candidate: str) -> str:
        key = self.keys.data_epoch
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(key, candidate, nx=True)
            pipe.get(key)
            _, current = await pipe.execute()
        return _text(current)

    async def persistence(self) -> Persistence:
        """What the server persists, from ``CONFIG GET appendonly`` and ``CONFIG GET save``;
        ``known`` is False when CONFIG is refused (managed Redis often renames it)."""
        try:
            appendonly = await self._r.config_get("appendonly")
            save = await self._r.config_get("save")
        except ResponseError as exc:
            return Persistence(known=False, detail=str(exc))
        aof = _text(next(iter(appendonly.values()), b"no")) == "yes"
        snapshots = _text(next(iter(save.values()), b"")).strip()
        return Persistence(aof=aof, snapshots=snapshots)

    # --- rooms -----------------------------------------------------------------------------

    async def create_room(
        self, name: str, *, metadata: JsonObject | None = None, auto: bool = False
    ) -> tuple[RoomRecord, bool]:
        now = time.time()
        static = {"name": name, "sid": "RM_" + uuid.uuid4().hex[:12], "created_at": now,
                  "auto": auto}
        created, record, meta, node = await self._run(
            "CREATE_ROOM", [self.keys.room(name)], [dumps(static), dumps(metadata or {})]
        )
        if created:
            await self._r.zadd(self.keys.rooms, {name: now})
        return _room({"record": record, "metadata": meta, "node": node}), bool(created)

    async def get_room(self, name: str) -> RoomRecord | None:
        fields = {_text(k): v for k, v in (await self._r.hgetall(self.keys.room(name))).items()}
        return _room(fields) if "record" in fields else None

    async def _room_names(self, after: tuple[float, str] | None, limit: int) -> list[str]:
        """Names in (created_at, name) order past ``after``; the zset orders equal scores by
        name, so only ties with the cursor's own score need skipping."""
        if after is None:
            stop = limit - 1 if limit > 0 else -1
            return [_text(n) for n in await self._r.zrange(self.keys.rooms, 0, stop)]
        score, last = after
        if limit <= 0:
            batch = await self._r.zrangebyscore(self.keys.rooms, score, "+inf", withscores=True)
            return [_text(n) for n, s in batch if (float(s), _text(n)) > after]
        names: list[str] = []
        offset = 0
        while len(names) < limit:
            batch = await self._r.zrangebyscore(
                self.keys.rooms, score, "+inf", start=offset, num=limit + 16, withscores=True
            )
            if not batch:
                break
            offset += len(batch)
            names += [_text(n) for n, s in batch if (float(s), _text(n)) > (score, last)]
        return names[:limit]

    async def list_rooms(
        self, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[RoomRecord]:
        names = await self._room_names(after, limit)
        async with self._r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.room(name))
            replies = await pipe.execute()
        rooms: list[RoomRecord] = []
        stale: list[str] = []
        for name, reply in zip(names, replies, strict=True):
            fields = {_text(k): v for k, v in reply.items()}
            if "record" in fields:
                rooms.append(_room(fields))
            else:
                stale.append(name)
        if stale:  # a delete that stopped between its two steps; nothing else can leave these
            await self._r.zrem(self.keys.rooms, *stale)
            if limit > 0:  # a full page again, now that they are gone from the index
                return await self.list_rooms(after=after, limit=limit)
        return rooms

    async def set_room_metadata(self, name: str, metadata: JsonObject) -> RoomRecord | None:
        if not await self._run("SET_ROOM_METADATA", [self.keys.room(name)], [dumps(metadata)]):
            return None
        return await self.get_room(name)

    async def delete_room(
        self, name: str, *, if_empty: bool = False
    ) -> tuple[RoomRecord, list[ParticipantRecord]] | None:
        k = self.keys
        reply = await self._run(
            "DELETE_ROOM",
            [k.room(name), k.participants(name), k.pmeta(name), k.counts(name)],
            [k.tracks(name), "1" if if_empty else "0"],
        )
        if reply is None:
            return None
        await self._r.zrem(k.rooms, name)
        room_flat, parts_flat, metas_flat, tracks = reply
        parts, metas = _pairs(parts_flat), _pairs(metas_flat)
        participants = [
            _participant(static, metas.get(sid), _pairs(tracks[i]))
            for i, (sid, static) in enumerate(parts.items())
        ]
        participants.sort(key=lambda p: (p.joined_at, p.sid))
        return _room(_pairs(room_flat)), participants

    async def drop_room_data(self, name: str) -> int:
        """Every key the room's scope index names (commerce, moderation, chat, likes, gifts,
        co-hosts), in one script that first checks the room was not re-created."""
        return int(await self._run(
            "DROP_ROOM_DATA", [self.keys.room(name), self.keys.scope_index(name)], []
        ))

    async def room_counts(self, name: str) -> RoomCounts:
        raw = await self._r.hgetall(self.keys.counts(name))
        counts = {_text(t): int(n) for t, n in raw.items()}
        return RoomCounts({t: n for t, n in counts.items() if n})

    # --- participants ----------------------------------------------------------------------

    async def add_participant(self, room: str, participant: ParticipantRecord) -> bool:
        k = self.keys
        result = await self._run(
            "ADD_PARTICIPANT",
            [k.room(room), k.participants(room), k.pmeta(room), k.counts(room)],
            [participant.sid, dumps(participant.static_json()), dumps(participant.metadata),
             participant.transport.value],
        )
        if result == -1:
            raise RoomNotFound(room)
        return bool(result)

    async def remove_participant(self, room: str, sid: str) -> ParticipantRecord | None:
        k = self.keys
        reply = await self._run(
            "REMOVE_PARTICIPANT",
            [k.participants(room), k.pmeta(room), k.counts(room), k.tracks(room, sid)],
            [sid],
        )
        if reply is None:
            return None
        static, meta, tracks = reply
        return _participant(static, meta, _pairs(tracks))

    async def get_participant(self, room: str, sid: str) -> ParticipantRecord | None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hget(self.keys.participants(room), sid)
            pipe.hget(self.keys.pmeta(room), sid)
            pipe.hgetall(self.keys.tracks(room, sid))
            static, meta, tracks = await pipe.execute()
        if static is None:
            return None
        return _participant(static, meta, {_text(t): v for t, v in tracks.items()})

    async def list_participants(self, room: str) -> list[ParticipantRecord]:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.keys.participants(room))
            pipe.hgetall(self.keys.pmeta(room))
            statics, metas = await pipe.execute()
        sids = [_text(s) for s in statics]
        async with self._r.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.hgetall(self.keys.tracks(room, sid))
            all_tracks = await pipe.execute()
        participants = [
            _participant(statics[sid.encode()], metas.get(sid.encode()),
                         {_text(t): v for t, v in tracks.items()})
            for sid, tracks in zip(sids, all_tracks, strict=True)
        ]
        return sorted(participants, key=lambda p: (p.joined_at, p.sid))

    async def set_participant_metadata(self, room: str, sid: str, metadata: JsonObject) -> bool:
        keys = [self.keys.participants(room), self.keys.pmeta(room)]
        return bool(await self._run("SET_IF_PARTICIPANT", keys, [sid, sid, dumps(metadata)]))

    async def add_track(self, room: str, sid: str, track: TrackRecord) -> bool:
        keys = [self.keys.participants(room), self.keys.tracks(room, sid)]
        return bool(
            await self._run("SET_IF_PARTICIPANT", keys, [sid, track.sid, dumps(track.to_json())])
        )

    async def remove_track(self, room: str, sid: str, track_sid: str) -> TrackRecord | None:
        raw = await self._run("REMOVE_TRACK", [self.keys.tracks(room, sid)], [track_sid])
        return None if raw is None else TrackRecord.from_json(json.loads(raw))

    async def set_track_muted(
        self, room: str, sid: str, track_sid: str, muted: bool
    ) -> TrackRecord | None:
        raw = await self._run(
            "SET_TRACK_MUTED", [self.keys.tracks(room, sid)], [track_sid, "1" if muted else "0"]
        )
        return None if raw is None else TrackRecord.from_json(json.loads(raw))

    # --- node registry ---------------------------------------------------------------------

    async def heartbeat(self, node: NodeRecord, ttl_ms: int) -> None:
        record = node.to_json() | {"seen_at": time.time()}
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.node(node.id), dumps(record), px=ttl_ms)
            pipe.zadd(self.keys.nodes, {node.id: record["seen_at"]})
            await pipe.execute()

    async def list_nodes(self) -> list[NodeRecord]:
        ids = [_text(n) for n in await self._r.zrange(self.keys.nodes, 0, -1)]
        if not ids:
            return []
        raws = await self._r.mget([self.keys.node(i) for i in ids])
        dead = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if dead:
            await self._r.zrem(self.keys.nodes, *dead)
        nodes = [NodeRecord.from_json(json.loads(raw)) for raw in raws if raw is not None]
        return sorted(nodes, key=lambda n: n.id)

    async def remove_node(self, node_id: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.node(node_id))
            pipe.zrem(self.keys.nodes, node_id)
            await pipe.execute()

    async def claim_room_node(self, room: str, node_id: str) -> str:
        owner = await self._run(
            "CLAIM_ROOM_NODE", [self.keys.room(room)], [node_id, self.keys.node()]
        )
        if owner == -1:
            raise RoomNotFound(room)
        return _text(owner)

    async def release_room_node(self, room: str, node_id: str) -> bool:
        return bool(await self._run("RELEASE_ROOM_NODE", [self.keys.room(room)], [node_id]))

    # --- generic atomic primitives ---------------------------------------------------------

    async def _indexed(self, scope: str, key: str, command: str, *args: Any, **kw: Any) -> Any:
        """``command`` on ``key`` with the key added to the scope's index, in one round trip
        (one MULTI: the key never exists without its index entry)."""
        async with self._r.pipeline(transaction=True) as pipe:
            getattr(pipe, command)(key, *args, **kw)
            pipe.sadd(self.keys.scope_index(scope), key)
            replies = await pipe.execute()
        return replies[0]

    async def incr(self, scope: str, key: str, by: int = 1, ttl_ms: int = 0) -> int:
        keys = [self.keys.scoped(scope, "kv", key), self.keys.scope_index(scope)]
        return int(await self._run("INCR", keys, [by, ttl_ms]))

    async def put(
        self, scope: str, key: str, value: bytes, *, ttl_ms: int = 0, only_if_absent: bool = False
    ) -> bool:
        done = await self._indexed(
            scope, self.keys.scoped(scope, "kv", key), "set", value, px=ttl_ms or None,
            nx=only_if_absent,
        )
        return bool(done)

    async def get(self, scope: str, key: str) -> bytes | None:
        value: bytes | None = await self._r.get(self.keys.scoped(scope, "kv", key))
        return value

    async def delete(self, scope: str, key: str) -> bool:
        return bool(await self._r.delete(self.keys.scoped(scope, "kv", key)))

    async def hset(self, scope: str, key: str, field: str, value: bytes) -> None:
        await self._indexed(scope, self.keys.scoped(scope, "h", key), "hset", field, value)

    async def hget(self, scope: str, key: str, field: str) -> bytes | None:
        value: bytes | None = await self._r.hget(self.keys.scoped(scope, "h", key), field)
        return value

    async def hgetall(self, scope: str, key: str) -> dict[str, bytes]:
        raw = await self._r.hgetall(self.keys.scoped(scope, "h", key))
        return {_text(f): v for f, v in raw.items()}

    async def hdel(self, scope: str, key: str, field: str) -> bool:
        return bool(await self._r.hdel(self.keys.scoped(scope, "h", key), field))

    async def zincr(self, scope: str, key: str, member: str, by: float) -> float:
        return float(
            await self._indexed(scope, self.keys.scoped(scope, "z", key), "zincrby", by, member)
        )

    async def ztop(self, scope: str, key: str, count: int) -> list[tuple[str, float]]:
        if count <= 0:
            return []
        raw = await self._r.zrevrange(
            self.keys.scoped(scope, "z", key), 0, count - 1, withscores=True
        )
        return [(_text(m), float(s)) for m, s in raw]

    def _pool_keys(self, scope: str, pool: str) -> list[str]:
        base = self.keys.scoped(scope, "pool", pool)
        return [base, base + ":held", base + ":ledger"]

    async def open_pool(
        self, scope: str, pool: str, units: int, *, opens_at_ms: int = 0, closes_at_ms: int = 0
    ) -> None:
        state, held, ledger = self._pool_keys(scope, pool)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(held, ledger)
            pipe.hset(state, mapping={
                "remaining": units, "initial": units,
                "opens": opens_at_ms, "closes": closes_at_ms,
            })
            pipe.sadd(self.keys.scope_index(scope), state, held, ledger)
            await pipe.execute()

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
        keys = [*self._pool_keys(scope, pool),
                self.keys.idempotency(scope, holder, idempotency_key),
                self.keys.scope_index(scope)]
        outcome, remaining, held, stored = await self._run(
            "CONSUME", keys,
            [holder, qty, limit, now_ms, record, idempotency_ttl_ms,
             "1" if idempotency_key else "0", request],
        )
        return ConsumeResult(ConsumeOutcome(_text(outcome)), int(remaining), int(held), stored)

    async def pool_state(self, scope: str, pool: str) -> PoolState | None:
        raw = await self._r.hmget(
            self._pool_keys(scope, pool)[0], ["remaining", "initial", "opens", "closes"]
        )
        if raw[0] is None:
            return None
        remaining, initial, opens, closes = (int(v) for v in raw)
        return PoolState(remaining, initial, opens, closes, initial - remaining)

    async def pool_ledger(self, scope: str, pool: str) -> list[bytes]:
        ledger: list[bytes] = await self._r.lrange(self._pool_keys(scope, pool)[2], 0, -1)
        return ledger
