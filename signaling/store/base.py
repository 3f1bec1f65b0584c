"""The Store: shared state of the control plane behind one async interface.

Two backends implement it with the same semantics: ``MemoryStore`` (one process, the default
of ``shopcast serve``) and ``RedisStore`` (multi-node). Every method is atomic on its own: a
read-modify-write that could race is one Lua script or one Redis command in ``RedisStore``, and
runs without an ``await`` in between in ``MemoryStore``. Callers never read, decide in Python
and write back.

Generic primitives take a ``scope`` (usually a room name) and a key. Keys of one scope share a
Redis Cluster hash slot, so one atomic operation may span several keys of the same scope.
"""

from __future__ import annotations

import abc

from signaling.store.records import (
    ConsumeResult,
    JsonObject,
    NodeRecord,
    ParticipantRecord,
    PoolState,
    RoomCounts,
    RoomRecord,
    TrackRecord,
)


class RoomNotFound(LookupError):
    """The room does not exist (or was closed while the caller was working on it)."""


class Store(abc.ABC):
    """Rooms, participants, node registry and generic atomic primitives."""

    # --- rooms -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_room(
        self, name: str, *, metadata: JsonObject | None = None, auto: bool = False
    ) -> tuple[RoomRecord, bool]:
        """Create ``name`` unless it exists; return the room and whether this call created it."""

    @abc.abstractmethod
    async def get_room(self, name: str) -> RoomRecord | None: ...

    @abc.abstractmethod
    async def list_rooms(
        self, *, after: tuple[float, str] | None = None, limit: int = 0
    ) -> list[RoomRecord]:
        """Rooms ordered by (created_at, name), oldest first; with ``after`` only those past
        that position (a page cursor: the last room of the previous page), at most ``limit``
        (0 = all)."""

    @abc.abstractmethod
    async def set_room_metadata(self, name: str, metadata: JsonObject) -> RoomRecord | None:
        """Replace a room's metadata; None when there is no such room."""

    @abc.abstractmethod
    async def delete_room(
        self, name: str, *, if_empty: bool = False
    ) -> tuple[RoomRecord, list[ParticipantRecord]] | None:
        """Remove a room with its participants in one step; return what was removed. With
        ``if_empty`` only a room without participants goes (an auto-created room whose last
        session ended, unless someone joined meanwhile)."""

    @abc.abstractmethod
    async def drop_room_data(self, name: str) -> int:
        """Delete everything kept in the closed room's scope (products, sales and their
        orders, idempotency keys, bans, mutes, chat, likes, gifts, co-hosts, counters), so a
        room re-created under the name starts empty; nothing when the room exists again.
        Returns how many keys went. The ``seq`` and history are the bus's (``forget_room``)."""

    @abc.abstractmethod
    async def room_counts(self, name: str) -> RoomCounts:
        """Live sessions per transport (all zero for an unknown room)."""

    # --- participants ----------------------------------------------------------------------

    @abc.abstractmethod
    async def add_participant(self, room: str, participant: ParticipantRecord) -> bool:
        """Add a session; False if its sid is already there; RoomNotFound if the room is not."""

    @abc.abstractmethod
    async def remove_participant(self, room: str, sid: str) -> ParticipantRecord | None:
        """Remove a session with its tracks; return it, or None if it was already gone, so
        exactly one caller sees each departure."""

    @abc.abstractmethod
    async def get_participant(self, room: str, sid: str) -> ParticipantRecord | None: ...

    @abc.abstractmethod
    async def list_participants(self, room: str) -> list[ParticipantRecord]:
        """Sessions in a room, in join order."""

    @abc.abstractmethod
    async def set_participant_metadata(self, room: str, sid: str, metadata: JsonObject) -> bool:
        """Replace a session's metadata; False when the session is gone."""

    @abc.abstractmethod
    async def add_track(self, room: str, sid: str, track: TrackRecord) -> bool:
        """Record a published track; False when the session is gone."""

    @abc.abstractmethod
    async def remove_track(self, room: str, sid: str, track_sid: str) -> TrackRecord | None: ...

    @abc.abstractmethod
    async def set_track_muted(
        self, room: str, sid: str, track_sid: str, muted: bool
    ) -> TrackRecord | None:
        """Flip a track's muted flag; return the updated track, None if it is gone."""

    # --- node registry ---------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, node: NodeRecord, ttl_ms: int) -> None:
        """Register or refresh a node; it counts as dead once ``ttl_ms`` pass without one."""

    @abc.abstractmethod
    async def list_nodes(self) -> list[NodeRecord]:
        """Live nodes (dead ones are pruned on the way)."""

    @abc.abstractmethod
    async def remove_node(self, node_id: str) -> None: ...

    @abc.abstractmethod
    async def claim_room_node(self, room: str, node_id: str) -> str:
        """Assign ``room`` to ``node_id`` unless a live node owns it; return the owner.
        RoomNotFound when the room does not exist."""

    @abc.abstractmethod
    async def release_room_node(self, room: str, node_id: str) -> bool:
        """Clear the room's owner if it is still ``node_id`` (compare-and-delete)."""

    # --- generic atomic primitives ---------------------------------------------------------

    @abc.abstractmethod
    async def incr(self, scope: str, key: str, by: int = 1, ttl_ms: int = 0) -> int:
        """Add ``by`` and return the new value; ``ttl_ms`` is applied when the key is created
        (a fixed-window rate limit is ``incr(..., ttl_ms=window) <= limit``)."""

    @abc.abstractmethod
    async def put(
        self, scope: str, key: str, value: bytes, *, ttl_ms: int = 0, only_if_absent: bool = False
    ) -> bool:
        """Set a value; with ``only_if_absent`` it is a claim and returns False if taken."""

    @abc.abstractmethod
    async def get(self, scope: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def delete(self, scope: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def hset(self, scope: str, key: str, field: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def hget(self, scope: str, key: str, field: str) -> bytes | None: ...

    @abc.abstractmethod
    async def hgetall(self, scope: str, key: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def hdel(self, scope: str, key: str, field: str) -> bool: ...

    @abc.abstractmethod
    async def zincr(self, scope: str, key: str, member: str, by: float) -> float:
        """Add to a member's score (a gift leaderboard); return the new score."""

    @abc.abstractmethod
    async def ztop(self, scope: str, key: str, count: int) -> list[tuple[str, float]]:
        """The ``count`` highest members, highest first (ties by member name)."""

    @abc.abstractmethod
    async def open_pool(
        self, scope: str, pool: str, units: int, *, opens_at_ms: int = 0, closes_at_ms: int = 0
    ) -> None:
        """(Re)start a pool of ``units`` (a flash sale's stock) open in the given window
        (0 = unbounded); holders' tallies and the ledger start empty."""

    @abc.abstractmethod
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
        """One atomic step: replay the first result for a used idempotency key (per scope and
        holder; ``KEY_REUSED`` instead when that key was used with another non-empty
        ``request``, what the caller asked for), else check the window, the units left and
        the holder's limit (0 = none), then take ``qty`` units, add to the holder's tally,
        append ``record`` to the pool's ledger and remember it (and ``request``) under the
        idempotency key. A flash-sale purchase."""

    @abc.abstractmethod
    async def pool_state(self, scope: str, pool: str) -> PoolState | None: ...

    @abc.abstractmethod
    async def pool_ledger(self, scope: str, pool: str) -> list[bytes]:
        """The records of every successful consume, in order."""

    # --- data loss ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def data_epoch(self, candidate: str) -> str:
        """The id written when this store's data began (``candidate`` when there is none yet,
        in one atomic step). It changes only when the data were lost (Redis restarted empty,
        or failed over to an empty replica): then every process registers again what it
        holds (``signaling/store/durability.py``)."""

    # --- lifetime --------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect (Redis) or nothing (memory)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""
