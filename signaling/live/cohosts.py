"""Co-host invitations: the anchor invites, the guest accepts or declines, the anchor removes.

A co-host's WHIP session is admitted only while an invitation for its identity stands
(``admits``); an ``admin`` token needs none. State lives in two store hashes per room, so every
step is one atomic store operation and no step can bring back what another removed:

- ``cohosts``: identity -> the invitation (who invited, when). Its presence is what admits.
- ``cohosts_accepted``: identity -> when it was accepted. Read only beside an invitation, so
  an accept racing a remove leaves at most a marker that nothing reads.
- ``stage``: session id -> a live publisher (identity, name, slot), kept by ``RoomService`` as
  sessions join and leave, so a joiner's ``state`` lists the publishers without reading every
  viewer's record.

Every change is a ``cohost`` event on the room's bus (invited, accepted, declined, removed;
``joined`` and ``left`` come from the sessions themselves, see ``RoomService``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgpack

from signaling.bus import Bus
from signaling.live.errors import LiveError, not_found
from signaling.live.moderation import Kick
from signaling.live.schema import event
from signaling.store import Store

INVITES = "cohosts"
ACCEPTED = "cohosts_accepted"
STAGE = "stage"
MAX_INVITES = 16  # pending and accepted together, per room


@dataclass(frozen=True)
class Invitation:
    identity: str
    invited_by: str
    invited_at_ms: int
    accepted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"identity": self.identity, "invited_by": self.invited_by,
                "invited_at_ms": self.invited_at_ms,
                "status": "accepted" if self.accepted else "invited"}


class Cohosts:
    """Invitations of one signaling deployment (every room), over the shared store."""

    def __init__(self, store: Store, bus: Bus, kick: Kick) -> None:
        self.store = store
        self.bus = bus
        self.kick = kick

    async def invite(self, room: str, identity: str, by: str) -> Invitation:
        if not identity or len(identity) > 128:
            raise LiveError("invalid", "identity must be 1-128 characters", 400)
        if identity == by:
            raise LiveError("invalid", "the anchor cannot invite itself", 400)
        current = await self.store.hgetall(room, INVITES)
        if identity not in current and len(current) >= MAX_INVITES:
            raise LiveError("too_many", f"a room holds at most {MAX_INVITES} invitations")
        invitation = Invitation(identity, by, int(time.time() * 1000))
        await self.store.hdel(room, ACCEPTED, identity)  # a new invitation starts unanswered
        await self.store.hset(room, INVITES, identity, msgpack.packb(
            {"by": by, "at_ms": invitation.invited_at_ms}))
        await self._announce(room, identity, "invited", by)
        return invitation

    async def accept(self, room: str, identity: str) -> Invitation:
        invitation = await self.get(room, identity)
        if invitation is None:
            raise not_found(f"{identity!r} has no invitation to co-host {room!r}", "not_invited")
        await self.store.hset(room, ACCEPTED, identity, str(int(time.time() * 1000)).encode())
        await self._announce(room, identity, "accepted", invitation.invited_by)
        return Invitation(identity, invitation.invited_by, invitation.invited_at_ms, True)

    async def decline(self, room: str, identity: str) -> None:
        if not await self.store.hdel(room, INVITES, identity):
            raise not_found(f"{identity!r} has no invitation to co-host {room!r}", "not_invited")
        await self.store.hdel(room, ACCEPTED, identity)
        await self._announce(room, identity, "declined", "")

    async def remove(self, room: str, identity: str, by: str) -> int:
        """Withdraw the invitation and end the co-host's sessions; returns sessions ended."""
        had_invitation = await self.store.hdel(room, INVITES, identity)
        await self.store.hdel(room, ACCEPTED, identity)
        kicked = await self.kick(room, identity)
        ended = len(kicked) if isinstance(kicked, list) else 0
        if not had_invitation and not ended:
            raise not_found(f"{identity!r} is not a co-host of {room!r}")
        await self._announce(room, identity, "removed", by)
        return ended

    async def get(self, room: str, identity: str) -> Invitation | None:
        raw = await self.store.hget(room, INVITES, identity)
        if raw is None:
            return None
        accepted = await self.store.hget(room, ACCEPTED, identity) is not None
        return _invitation(identity, raw, accepted)

    async def admits(self, room: str, identity: str) -> bool:
        """May ``identity`` publish as a co-host in ``room``? (The SFU asks at WHIP time.)"""
        return await self.store.hget(room, INVITES, identity) is not None

    async def list(self, room: str) -> list[Invitation]:
        invites = await self.store.hgetall(room, INVITES)
        accepted = await self.store.hgetall(room, ACCEPTED)
        return sorted(
            (_invitation(identity, raw, identity in accepted) for identity, raw in invites.items()),
            key=lambda i: (i.invited_at_ms, i.identity),
        )

    async def _announce(self, room: str, identity: str, action: str, by: str) -> None:
        await self.bus.publish(room, event("cohost", identity=identity, action=action,
                                           by=by or None))


def _invitation(identity: str, raw: bytes, accepted: bool) -> Invitation:
    data = msgpack.unpackb(raw, raw=False)
    return Invitation(identity, str(data.get("by", "")), int(data.get("at_ms", 0)), accepted)


# --- the stage: who publishes in a room, by slot ---------------------------------------------

async def stage_joined(store: Store, room: str, sid: str, identity: str, name: str,
                       slot: int) -> None:
    await store.hset(room, STAGE, sid, msgpack.packb(
        {"identity": identity, "name": name, "sid": sid, "slot": slot}))


async def stage_left(store: Store, room: str, sid: str) -> None:
    await store.hdel(room, STAGE, sid)


async def stage(store: Store, room: str) -> list[dict[str, Any]]:
    """The room's publishers, anchor first."""
    raw = await store.hgetall(room, STAGE)
    entries = [msgpack.unpackb(value, raw=False) for value in raw.values()]
    return sorted(entries, key=lambda e: (e["slot"], e["sid"]))


async def clear(store: Store, room: str) -> None:
    """A closed room keeps no invitations and no stage."""
    for key in (INVITES, ACCEPTED, STAGE):
        for field in await store.hgetall(room, key):
            await store.hdel(room, key, field)
