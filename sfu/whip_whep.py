"""WHIP (RFC 9725) publish and WHEP play: the standard HTTP offer/answer exchanges.

``POST /whip/{room}`` and ``POST /whep/{room}`` take an ``application/sdp`` offer and answer
``201`` with a ``Location`` resource; ``DELETE`` on that resource ends the session. Only the
session's own identity (the token's ``sub``) or an ``admin`` of the room may end it (``403
not_owner`` otherwise): a resource id that leaks must not let a co-host or a viewer end the
anchor's stream. A banned identity is refused at both doors (``403 banned``), as at FLV and RTMP,
and so is everyone while the room is forbidden (``403 room_forbidden``).

On a node of a multi-node deployment (``shopcast sfu``) the app carries a ``Placement``: a
publish for a room another node owns, or a play for a room live elsewhere, answers ``307``
to that node, so a direct or stale node URL still ends up where the room is.

The media plane raises ``sfu.errors.MediaError``; ``media_errors`` (``sfu/http_errors.py``)
answers each with its status and JSON body. What is HTTP's own (content type, methods) stays an
``ApiError`` here.
"""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from sfu.errors import BadOffer, require_room_name
from sfu.http_errors import media_errors
from sfu.layers import parse_quality
from sfu.node import NODE_KEY
from sfu.offer import max_sections, parse_offer
from sfu.session import Session
from signaling.claims import Claims, Grant
from signaling.errors import ApiError, forbidden
from signaling.http_errors import Handler
from signaling.routing import redirect
from signaling.tokens import authorize

SECRET_KEY = web.AppKey("token_secret", str)



class Placement(Protocol):
    """Where a room lives (``signaling.routing.NodePlacement``); None means "here"."""

    async def publish_elsewhere(self, room: str) -> str | None:
        """The base URL of the node a publisher of ``room`` must use, if not this one; may
        assign the room (to this node or another)."""
        ...

    async def play_elsewhere(self, room: str) -> str | None:
        """The base URL of the node where ``room`` is live, if not this one."""
        ...

    async def publish_here(self, room: str) -> str | None:
        """For RTMP, which cannot be redirected: claim ``room`` for this node, or name the
        live node that owns it."""
        ...


PLACEMENT_KEY = web.AppKey("node_placement", Placement)


async def elsewhere(request: web.Request, room: str, publish: bool) -> str | None:
    """The node that should answer this request, when it is not this one."""
    placement = request.app.get(PLACEMENT_KEY)
    if placement is None:
        return None
    if publish:
        return await placement.publish_elsewhere(room)
    local = request.app[NODE_KEY].rooms.get(room)
    if local is not None and local.live:
        return None
    return await placement.play_elsewhere(room)


_KINDS = {"whip": ("send", "publisher"), "whep": ("recv", "viewer")}


def _room(request: web.Request) -> str:
    return require_room_name(request.match_info["room"])


async def _read_offer(request: web.Request) -> str:
    if request.content_type != "application/sdp":
        raise ApiError(
            415, "unsupported_media_type", "Content-Type must be application/sdp"
        )
    try:
        return await request.text()
    except UnicodeDecodeError as exc:
        raise BadOffer("SDP must be UTF-8 text") from exc


def _claims(request: web.Request, kind: str, room: str) -> Claims:
    return authorize(request.app[SECRET_KEY], request.headers.get("Authorization"),
                     publish=kind == "whip", room=room)


async def refuse_banned_or_forbidden(request: web.Request, room: str, claims: Claims) -> None:
    """The ban and forbid part of the doors' authorization step (WHIP, WHEP, FLV): ``403
    banned``, or ``403 room_forbidden`` with the reason while the room is forbidden (viewers
    too: there is nothing to watch, and what was cut is not served again)."""
    node = request.app[NODE_KEY]
    if await node.is_banned(room, claims.identity):
        raise forbidden(f"{claims.identity!r} is banned from room {room!r}", "banned")
    await node.refuse_forbidden(room)


def require_owner(session: Session, claims: Claims) -> None:
    """Only the session's identity, or an admin of its room, may end it: ``403 not_owner``.
    (The token's room was checked already: an admin token is for this room or ``*``.)"""
    if claims.identity != session.identity and Grant.ADMIN not in claims.grants:
        raise forbidden("only the session's own identity or an admin of the room may end it",
                        "not_owner")


def client_address(request: web.Request, trusted_proxies: list[str]) -> str | None:
    """The client's address for the per-address session limit: the peer's, or, when the peer
    is a trusted proxy (the front door forwards WHIP/WHEP), the nearest address in
    ``X-Forwarded-For`` that is not one of the trusted proxies."""
    address = request.remote
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    while address in trusted_proxies and hops and hops[-1]:
        address = hops.pop()
    return address


def _post(kind: str) -> Handler:
    want, _ = _KINDS[kind]

    @media_errors
    async def handler(request: web.Request) -> web.StreamResponse:
        room = _room(request)
        claims = _claims(request, kind, room)
        await refuse_banned_or_forbidden(request, room, claims)
        target = await elsewhere(request, room, publish=kind == "whip")
        if target is not None:
            return redirect(target, request)
        node = request.app[NODE_KEY]
        quality = parse_quality(request.query.get("quality") if kind == "whep" else None)
        offer = parse_offer(await _read_offer(request), want=want,
                            section_limit=max_sections(node.settings.max_publishers, want))
        session: Session
        address = client_address(request, node.settings.trusted_proxies)
        if kind == "whip":
            session, answer = await node.publish(room, claims.identity, offer, claims,
                                                 address=address)
        else:
            session, answer = await node.play(room, claims.identity, offer, claims,
                                              address=address, quality=quality)
        location = f"/{kind}/{room}/{session.id}"
        return web.Response(
            status=201,
            text=answer,
            content_type="application/sdp",
            headers={"Location": location, "ETag": f'"{session.id}"'},
        )

    return handler


def _delete(kind: str) -> Handler:
    _, role = _KINDS[kind]

    @media_errors
    async def handler(request: web.Request) -> web.StreamResponse:
        room = _room(request)
        claims = _claims(request, kind, room)
        session = request.app[NODE_KEY].session(room, request.match_info["id"], role)
        require_owner(session, claims)
        await session.close()
        return web.Response(status=204)

    return handler


async def _patch(request: web.Request) -> web.StreamResponse:
    """Trickle ICE and ICE restart are not supported (aiortc gathers before answering)."""
    raise ApiError(405, "trickle_not_supported", "this server does not support trickle ICE")


def add_routes(app: web.Application) -> None:
    for kind in ("whip", "whep"):
        app.router.add_post(f"/{kind}/{{room}}", _post(kind))
        app.router.add_delete(f"/{kind}/{{room}}/{{id}}", _delete(kind))
        app.router.add_patch(f"/{kind}/{{room}}/{{id}}", _patch)
