"""The records the store keeps: rooms, participants, tracks, nodes and atomic-op results.

They are plain frozen dataclasses with a JSON form, so both backends store exactly the same
thing and the REST API can return ``to_json()`` without a separate serializer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

JsonObject = dict[str, Any]


def dumps(value: object) -> str:
    """Compact JSON, the form every record takes inside Redis."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class RoomRecord:
    """A room: created over REST, or implicitly when its first session starts (``auto``)."""

    name: str
    sid: str
    created_at: float
    metadata: JsonObject = field(default_factory=dict)
    auto: bool = False
    node: str = ""

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, data: JsonObject) -> RoomRecord:
        return cls(
            name=str(data["name"]),
            sid=str(data["sid"]),
            created_at=float(data["created_at"]),
            metadata=dict(data.get("metadata") or {}),
            auto=bool(data.get("auto", False)),
            node=str(data.get("node", "")),
        )


class Transport(StrEnum):
    """How a participant's session reaches the room; viewer counts are kept per transport."""

    WHIP = "whip"
    RTMP = "rtmp"  # an encoder publishing over RTMP
    WHEP = "whep"
    FLV = "flv"
    WS = "ws"


PUBLISHING = frozenset((Transport.WHIP, Transport.RTMP))
"""Transports of publishers: every other session counts as a viewer."""


@dataclass(frozen=True)
class TrackRecord:
    """A track a participant publishes; ``muted`` is set by the mute API."""

    sid: str
    kind: str
    codec: str = ""
    muted: bool = False

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, data: JsonObject) -> TrackRecord:
        return cls(
            sid=str(data["sid"]),
            kind=str(data["kind"]),
            codec=str(data.get("codec", "")),
            muted=bool(data.get("muted", False)),
        )


@dataclass(frozen=True)
class ParticipantRecord:
    """One session in a room. Keyed by ``sid`` (the SFU's leg id), so two sessions with the
    same identity (say, one token shared by many viewers) are two participants; the REST API
    addresses participants by identity and acts on all of that identity's sessions."""

    sid: str
    identity: str
    transport: Transport
    role: str = "viewer"
    name: str = ""
    node: str = ""
    slot: int = -1  # a publisher's place in the room: 0 the anchor, 1.. co-hosts; -1 viewers
    joined_at: float = 0.0
    metadata: JsonObject = field(default_factory=dict)
    tracks: tuple[TrackRecord, ...] = ()

    def to_json(self) -> JsonObject:
        data = asdict(self)
        data["transport"] = self.transport.value
        data["tracks"] = [t.to_json() for t in self.tracks]
        return data

    def static_json(self) -> JsonObject:
        """What never changes after join (metadata and tracks are kept beside it)."""
        data = self.to_json()
        del data["metadata"], data["tracks"]
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> ParticipantRecord:
        return cls(
            sid=str(data["sid"]),
            identity=str(data["identity"]),
            transport=Transport(data["transport"]),
            role=str(data.get("role", "viewer")),
            name=str(data.get("name", "")),
            node=str(data.get("node", "")),
            slot=int(data.get("slot", -1)),
            joined_at=float(data.get("joined_at", 0.0)),
            metadata=dict(data.get("metadata") or {}),
            tracks=tuple(TrackRecord.from_json(t) for t in data.get("tracks") or ()),
        )

    def with_parts(self, metadata: JsonObject, tracks: list[TrackRecord]) -> ParticipantRecord:
        return replace(self, metadata=metadata, tracks=tuple(sorted(tracks, key=lambda t: t.sid)))


@dataclass(frozen=True)
class RoomCounts:
    """Live sessions per transport, kept atomically with the participant set."""

    by_transport: dict[str, int] = field(default_factory=dict)

    @property
    def participants(self) -> int:
        return sum(self.by_transport.values())

    @property
    def viewers(self) -> int:
        return sum(n for t, n in self.by_transport.items() if t not in PUBLISHING)

    def to_json(self) -> JsonObject:
        return {
            "participants": self.participants,
            "viewers": self.viewers,
            "by_transport": {t.value: self.by_transport.get(t.value, 0) for t in Transport},
        }


@dataclass(frozen=True)
class NodeRecord:
    """An SFU node as it last reported itself in a heartbeat."""

    id: str
    url: str
    publishers: int = 0
    viewers: int = 0
    cpu: float = 0.0
    bitrate_bps: int = 0
    max_viewers: int = 0
    draining: bool = False
    seen_at: float = 0.0

    def to_json(self) -> JsonObject:
        return asdict(self)

    @classmethod
    def from_json(cls, data: JsonObject) -> NodeRecord:
        return cls(
            id=str(data["id"]),
            url=str(data["url"]),
            publishers=int(data.get("publishers", 0)),
            viewers=int(data.get("viewers", 0)),
            cpu=float(data.get("cpu", 0.0)),
            bitrate_bps=int(data.get("bitrate_bps", 0)),
            max_viewers=int(data.get("max_viewers", 0)),
            draining=bool(data.get("draining", False)),
            seen_at=float(data.get("seen_at", 0.0)),
        )


class ConsumeOutcome(StrEnum):
    """How an attempt to take units from a pool ended (a flash-sale purchase, say)."""

    OK = "ok"
    DUPLICATE = "duplicate"  # the idempotency key was used before: the first result is returned
    EXHAUSTED = "exhausted"  # not enough units left
    LIMIT = "limit"  # the holder would go over the per-holder limit
    CLOSED = "closed"  # the pool's window has not started or has ended
    UNKNOWN = "unknown"  # no such pool
    KEY_REUSED = "key_reused"  # the idempotency key was used before for another request


@dataclass(frozen=True)
class ConsumeResult:
    outcome: ConsumeOutcome
    remaining: int
    held: int = 0  # units the holder has after this attempt
    record: bytes = b""  # the stored record (the caller's on OK, the first one on DUPLICATE)

    @property
    def ok(self) -> bool:
        return self.outcome in (ConsumeOutcome.OK, ConsumeOutcome.DUPLICATE)


@dataclass(frozen=True)
class PoolState:
    remaining: int
    initial: int
    opens_at_ms: int
    closes_at_ms: int
    consumed: int
