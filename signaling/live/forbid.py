"""Forbid: a compliance stop that cuts a room's publishing and refuses it until a time.

``POST /api/v1/rooms/{room}/forbid {"until": unix, "reason": str}`` (admin of the room):

1. the forbid is written to the store, under the scope ``_forbid`` (not the room's own scope,
   which is dropped when an auto-created room empties: the forbid must outlive the very
   publishers it ends) with a TTL that ends it at ``until``; every process and node reads
   the same key, and it survives restarts with the store;
2. the room's publishers end on every node (``MediaControl.end_publishers``: this node
   directly, the bus's ``media`` topic in multi-node), WHIP anchors, co-hosts and RTMP
   encoders alike;
3. every participant gets a ``room_forbidden`` event (reason, until).

Written before the publishers are ended, so a publisher that reconnects in between is refused
already. The doors ask ``Forbids.get`` next to the ban check (the one authorization step):
WHIP, ``/ws`` publish and play, RTMP answer ``403 room_forbidden`` with the reason; WHEP and
HTTP-FLV viewers too (there is nothing to watch, and what was cut must not be re-served);
``/ws/events`` joins stay open and the ``state`` carries ``forbid``, so pages show why.
``DELETE`` lifts it (a ``forbid_lifted`` event), and the key's TTL lifts it at ``until``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from signaling.bus import Bus
from signaling.errors import ApiError, bad_request
from signaling.live.schema import event
from signaling.store import Store

SCOPE = "_forbid"  # not a valid room name: closing a room never drops it
MAX_REASON_CHARS = 500
MAX_FORBID_S = 365 * 86400  # a forbid ends within a year; longer is a mistake or a ban
EndPublishing = Callable[[str], Awaitable[object]]  # room -> end its publishers on every node


@dataclass(frozen=True)
class Forbid:
    until: int  # unix seconds
    reason: str
    by: str  # the admin's identity

    def to_json(self) -> dict[str, Any]:
        return {"until": self.until, "reason": self.reason, "by": self.by}

    def error(self, room: str) -> ApiError:
        """What every door answers while the forbid holds: ``403 room_forbidden``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.until))
        return ApiError(403, "room_forbidden",
                        f"room {room!r} is forbidden until {stamp}: {self.reason}")


class Forbids:
    def __init__(self, store: Store, bus: Bus,
                 end_publishing: EndPublishing | None = None) -> None:
        self.store = store
        self.bus = bus
        self.end_publishing = end_publishing

    async def get(self, room: str) -> Forbid | None:
        raw = await self.store.get(SCOPE, room)
        if raw is None:
            return None
        data = json.loads(raw)
        forbid = Forbid(int(data["until"]), str(data["reason"]), str(data["by"]))
        return forbid if forbid.until > time.time() else None  # the TTL rounds up to ms

    async def refusal(self, room: str) -> ApiError | None:
        """The doors' question: the ``403 room_forbidden`` to answer, while the forbid holds."""
        forbid = await self.get(room)
        return forbid.error(room) if forbid is not None else None

    async def forbid(self, room: str, until: int, reason: str, by: str) -> Forbid:
        """Store, end the publishers, then announce; ``until`` in the future, within a year."""
        left_s = until - time.time()
        if left_s <= 0:
            raise bad_request("until must be a unix time in the future", "invalid_until")
        if left_s > MAX_FORBID_S:
            raise bad_request("until must be within a year", "invalid_until")
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON_CHARS:
            raise bad_request(f"reason: 1-{MAX_REASON_CHARS} characters", "invalid_reason")
        forbid = Forbid(until, reason, by)
        await self.store.put(SCOPE, room, json.dumps(forbid.to_json()).encode(),
                             ttl_ms=max(1, int(left_s * 1000)))
        if self.end_publishing is not None:  # None: no media plane (tests, tools)
            await self.end_publishing(room)  # the cut first, the news after
        await self.bus.publish(room, event("room_forbidden", until=until, reason=reason))
        return forbid

    async def lift(self, room: str) -> bool:
        """False when the room was not forbidden (nothing is announced)."""
        if not await self.store.delete(SCOPE, room):
            return False
        await self.bus.publish(room, event("forbid_lifted"))
        return True
