"""What a token grants, as plain data: ``Claims`` and ``Grant``.

Kept apart from ``signaling/tokens.py`` (which signs and verifies with PyJWT) so that code which
only carries or checks claims, such as the media plane's worker processes, loads no JWT code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from signaling.errors import forbidden


class Grant(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    CHAT = "chat"
    COHOST = "cohost"
    ADMIN = "admin"


# The room name of a token valid in every room; only admin tokens may carry it.
EVERY_ROOM = "*"

PUBLISHING = (Grant.PUBLISH, Grant.COHOST)
WATCHING = (Grant.SUBSCRIBE, Grant.PUBLISH, Grant.COHOST)


@dataclass(frozen=True)
class Claims:
    identity: str
    room: str
    grants: frozenset[Grant]
    name: str = ""
    expires_at: int = 0
    issued_at: int = 0
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    def covers(self, room: str) -> bool:
        """Whether this token may act in ``room``: its own room, or any room (``*``, an act on
        every room, included) for an admin token naming ``*``. A ``*`` token without ``admin``
        covers nothing (verify refuses it anyway)."""
        if self.room == EVERY_ROOM:
            return Grant.ADMIN in self.grants
        return self.room == room

    def require(self, grant: Grant, room: str | None = None) -> None:
        """Raise 403 unless this token carries ``grant`` (admin carries all) for ``room``."""
        self.require_any((grant,), room)

    def require_any(self, grants: tuple[Grant, ...], room: str | None = None) -> None:
        """Raise 403 unless this token carries one of ``grants`` (admin carries all)."""
        if room is not None and not self.covers(room):
            if room == EVERY_ROOM:
                raise forbidden(f"token is for room {self.room!r}; this acts on every room "
                                "and needs an admin token for room '*'", "wrong_room")
            raise forbidden(f"token is for room {self.room!r}, not {room!r}", "wrong_room")
        if Grant.ADMIN not in self.grants and not self.grants.intersection(grants):
            wanted = " or ".join(repr(g.value) for g in grants)
            raise forbidden(f"token lacks the {wanted} grant", "missing_grant")

    def require_media(self, publish: bool, room: str) -> None:
        """WHIP/WHEP and their WebSocket twins: ``publish`` or ``cohost`` may publish (the node
        then wants a live anchor and an invitation for a co-host); they may also watch the room,
        as ``subscribe`` may (an anchor sees its co-hosts, never its own tracks)."""
        self.require_any(PUBLISHING if publish else WATCHING, room)
