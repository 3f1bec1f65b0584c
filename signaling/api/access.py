"""Who may call each REST route: the grant it needs and the rooms it acts on (its scope).

Each ``Route`` declares both (``grant`` and ``scope``; the scope defaults from the path, the
strict way: a route with ``{room}`` acts on that room, one without acts on every room). The
checks here run before any handler, and docs/api.md's authorization matrix is rendered from
the same declaration (``signaling.api.docs``), so the rule, its check and its document are one.

An admin token for room X acts on room X only; ``*`` (every room) is a room name only admin
tokens may carry (``signaling.tokens`` refuses any other), and deployment-wide routes need it.

A route that needs a token declares it here rather than checking in its handler (``grant=None``
means public, and the authorization matrix test holds it to that): a route whose room is known
only once its resource is found declares ``Scope.RESOURCE_ROOM`` and calls
``Call.require_room``; one that players fetch without headers declares a ``token`` query
parameter, and ``?token=`` is then accepted in place of ``Authorization``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiohttp import web

from signaling.claims import EVERY_ROOM, Claims, Grant
from signaling.room_names import require_room_name
from signaling.tokens import authorize

if TYPE_CHECKING:
    from signaling.api.routes import Route


class Scope(StrEnum):
    PUBLIC = "public"
    ROOM = "room"
    DEPLOYMENT = "deployment"
    MINTED_ROOM = "minted room"
    RESOURCE_ROOM = "resource's room"


SCOPE_TEXT = {
    Scope.PUBLIC: "anyone, no token",
    Scope.ROOM: "a token for the room in the path, or an admin token for `*`",
    Scope.DEPLOYMENT: "every room at once: an admin token for `*`",
    Scope.MINTED_ROOM: "a token for the body's `room`, or an admin token for `*`; `*` in the "
    "body needs an admin token for `*`; every grant asked for must be one the caller holds",
    Scope.RESOURCE_ROOM: "a token for the room of the resource in the path (known once it is "
    "found: an unknown one is a 404 first), or an admin token for `*`",
}
ROOM_PARAM = "{room}"
TOKEN_QUERY = "token"  # a route whose query declares it takes the token there too


def scope_of(route: Route) -> Scope:
    """The route's declared scope, or the one its path implies; a declaration that cannot hold
    (a room scope without ``{room}``, a token-free route with a grant) is a ValueError."""
    scope = route.scope
    if scope is None:
        scope = (Scope.PUBLIC if route.grant is None
                 else Scope.ROOM if ROOM_PARAM in route.path else Scope.DEPLOYMENT)
    if (scope is Scope.PUBLIC) != (route.grant is None):
        raise ValueError(f"{route.method} {route.path}: a public route is one without a grant")
    if scope is Scope.ROOM and ROOM_PARAM not in route.path:
        raise ValueError(f"{route.method} {route.path}: a room scope needs {ROOM_PARAM}")
    return scope


def authorize_request(route: Route, secret: str, request: web.Request) -> Claims | None:
    """In order: a room route's room name (400 ``bad_room``), the token (401), its grant and
    room (403). A deployment route checks the grant before the reach (``*``), so a viewer hears
    ``missing_grant`` and a room's admin ``wrong_room``. A minted room is checked once the body
    is read (``authorize_body``), a resource's room by the handler once it found the resource
    (``Call.require_room``)."""
    scope = scope_of(route)
    if route.grant is None:
        return None
    room = request.match_info["room"] if scope is Scope.ROOM else None
    if room is not None:
        require_room_name(room)  # the rule of every door, before the token says anything
    query_token = request.query.get(TOKEN_QUERY) if TOKEN_QUERY in route.query else None
    claims = authorize(secret, request.headers.get("Authorization"), grant=route.grant,
                       room=room, query_token=query_token)
    if scope is Scope.DEPLOYMENT:
        claims.require(route.grant, EVERY_ROOM)
    return claims


def authorize_body(route: Route, claims: Claims | None, body: Any) -> None:
    """A minted room: the caller's token covers the body's room and holds every grant it
    asks for (admin holds all), so nobody mints beyond its own reach."""
    if claims is None or route.grant is None or scope_of(route) is not Scope.MINTED_ROOM:
        return
    room = body["room"]
    claims.require(route.grant, room)
    for grant in body["grants"]:
        claims.require(Grant(grant), room)
