"""Access tokens: JWT (HS256) with the claims fixed in DESIGN.md.

``{"sub": identity, "room": room, "name": optional, "grants": [...], "exp": unix, "iat": unix}``

Signing and verifying live here; the claims themselves (``Claims``, ``Grant``) are plain data in
``signaling/claims.py``, re-exported here, for code that must not load PyJWT.
"""

from __future__ import annotations

import time

import jwt

from signaling.claims import EVERY_ROOM, PUBLISHING, WATCHING, Claims, Grant
from signaling.errors import ApiError, unauthorized

ALGORITHM = "HS256"
WILDCARD_NEEDS_ADMIN = "only admin tokens may name room '*'"


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
    """Sign a token. ``room`` may be ``"*"`` for an admin token valid in every room; any
    other token naming ``*`` is refused (``ValueError``), as ``verify`` would refuse it."""
    if not secret:
        raise ValueError("a token secret is required")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    granted = sorted({Grant(g).value for g in grants})
    if room == EVERY_ROOM and Grant.ADMIN.value not in granted:
        raise ValueError(WILDCARD_NEEDS_ADMIN)
    issued = int(time.time()) if now is None else now
    claims: dict[str, object] = {
        "sub": identity,
        "room": room,
        "grants": granted,
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
    if payload["room"] == EVERY_ROOM and Grant.ADMIN not in grants:
        raise unauthorized(f"invalid token: {WILDCARD_NEEDS_ADMIN}", "invalid_token")
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
    room: str | None = None,
    grant: Grant | None = None,
    publish: bool | None = None,
    query_token: str | None = None,
) -> Claims:
    """Every door's token check, in one place: the token (``Authorization: Bearer``, else
    ``query_token``), verified, then the rule the door needs: ``grant`` in ``room``
    (``Claims.require``), or, with ``publish`` given, the media rule of WHIP/WHEP, RTMP and
    their ``/ws`` twins (``Claims.require_media``). With neither, the caller checks the grants
    itself (a socket that carries several kinds of message)."""
    claims = verify(secret, bearer(authorization, query_token))
    if grant is not None:
        claims.require(grant, room)
    if publish is not None:
        if room is None:
            raise ValueError("the media rule needs the room")
        claims.require_media(publish, room)
    return claims


__all__ = [
    "EVERY_ROOM", "PUBLISHING", "WATCHING", "ApiError", "Claims", "Grant", "authorize", "bearer",
    "mint", "verify",
]
