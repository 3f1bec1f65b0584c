"""Access tokens: JWT (HS256) with the claims fixed in DESIGN.md.

``{"sub": identity, "room": room, "name": optional, "grants": [...], "exp": unix, "iat": unix}``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

import jwt

from signaling.errors import ApiError, forbidden, unauthorized

ALGORITHM = "HS256"


class Grant(StrEnum):
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    CHAT = "chat"
    COHOST = "cohost"
    ADMIN = "admin"


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

    def require(self, grant: Grant, room: str | None = None) -> None:
        """Raise 403 unless this token carries ``grant`` (admin carries all) for ``room``."""
        self.require_any((grant,), room)

    def require_any(self, grants: tuple[Grant, ...], room: str | None = None) -> None:
        """Raise 403 unless this token carries one of ``grants`` (admin carries all)."""
        if room is not None and self.room not in (room, "*"):
            raise forbidden(f"token is for room {self.room!r}, not {room!r}", "wrong_room")
        if Grant.ADMIN not in self.grants and not self.grants.intersection(grants):
            wanted = " or ".join(repr(g.value) for g in grants)
            raise forbidden(f"token lacks the {wanted} grant", "missing_grant")

    def require_media(self, publish: bool, room: str) -> None:
        """WHIP/WHEP and their WebSocket twins: ``publish`` or ``cohost`` may publish (the node
        then wants a live anchor and an invitation for a co-host); they may also watch the room,
        as ``subscribe`` may (an anchor sees its co-hosts, never its own tracks)."""
        self.require_any(PUBLISHING if publish else WATCHING, room)


def mint(
    secret: str,
    *,
    room: str,
    identity: str,
    grants: list[Grant] | list[str],
    name: str = "",
    ttl: int = 3600,
    now: int | None = None,
) -> str:
    """Sign a token. ``room`` may be ``"*"`` for an admin token valid in every room."""
    if not secret:
        raise ValueError("a token secret is required")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = int(time.time()) if now is None else now
    claims: dict[str, object] = {
        "sub": identity,
        "room": room,
        "grants": sorted({Grant(g).value for g in grants}),
        "iat": issued,
        "exp": issued + ttl,
    }
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(secret: str, token: str) -> Claims:
    """Check signature, expiry and shape; raise a 401 ApiError that says what is wrong."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub", "room"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise unauthorized("token has expired", "token_expired") from exc
    except jwt.InvalidTokenError as exc:
        raise unauthorized(f"invalid token: {exc}", "invalid_token") from exc
    raw_grants = payload.get("grants", [])
    if not isinstance(raw_grants, list):
        raise unauthorized("invalid token: grants must be a list", "invalid_token")
    try:
        grants = frozenset(Grant(g) for g in raw_grants)
    except ValueError as exc:
        raise unauthorized(f"invalid token: unknown grant ({exc})", "invalid_token") from exc
    if not isinstance(payload["sub"], str) or not isinstance(payload["room"], str):
        raise unauthorized("invalid token: sub and room must be strings", "invalid_token")
    return Claims(
        identity=payload["sub"],
        room=payload["room"],
        grants=grants,
        name=str(payload.get("name", "")),
        expires_at=int(payload["exp"]),
        issued_at=int(payload.get("iat", 0)),
    )


def bearer(authorization: str | None, query_token: str | None = None) -> str:
    """The token from ``Authorization: Bearer`` (or a ``?token=`` fallback), or a 401."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("Authorization must be 'Bearer <token>'", "missing_token")
        return value.strip()
    if query_token:
        return query_token
    raise unauthorized("missing bearer token", "missing_token")


def authorize(
    secret: str,
    authorization: str | None,
    *,
    grant: Grant,
    room: str | None,
    query_token: str | None = None,
) -> Claims:
    """Verify the request's token and require ``grant`` in ``room`` in one call."""
    claims = verify(secret, bearer(authorization, query_token))
    claims.require(grant, room)
    return claims


__all__ = ["ApiError", "Claims", "Grant", "authorize", "bearer", "mint", "verify"]
