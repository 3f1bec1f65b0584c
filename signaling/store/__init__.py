"""Shared state of the control plane: one ``Store`` interface, a memory and a Redis backend."""

from __future__ import annotations

from signaling.store.base import RoomNotFound, Store
from signaling.store.memory import MemoryStore
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
    Transport,
)

__all__ = [
    "ConsumeOutcome",
    "ConsumeResult",
    "JsonObject",
    "MemoryStore",
    "NodeRecord",
    "ParticipantRecord",
    "PoolState",
    "RoomCounts",
    "RoomNotFound",
    "RoomRecord",
    "Store",
    "TrackRecord",
    "Transport",
]
