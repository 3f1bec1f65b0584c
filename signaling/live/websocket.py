"""``GET /ws/events/{room}?token=...&after_seq=N&epoch=E``: room events over a WebSocket.

For clients without a WebRTC data channel (FLV viewers, tools): the same msgpack maps in binary
frames, through the same ``EventGateway`` as the data channel. On connect the client gets
``state``, then every room event from ``state.seq + 1`` in ``seq`` order. A client that
reconnects with ``after_seq`` (the last ``seq`` it saw) gets exactly the events after it and no
``state``; if history no longer reaches back that far, or they are over the resume caps, or
``epoch`` (the one ``after_seq`` belongs to) is not the room's any more, it gets a fresh
``state`` instead. A connected client whose room's seq starts again gets ``resync``. A
``resume`` message is bounded per socket (``resume_limited``), and reconnects with
``after_seq`` per room and identity (``429 resume_limited`` with ``Retry-After`` before the
upgrade). With the store away the upgrade is refused (``503 store_unavailable``), and a join
that meets it after the upgrade is closed with 1013 (try again later).

The token (query ``token`` or ``Authorization: Bearer``) needs ``subscribe``, ``chat`` or
``admin`` for the room; a banned identity is refused with 403 and disconnected (close code
4003) when banned while connected. At the token's ``exp`` the socket gets ``error
token_expired`` and is closed with code 4001 (one timer per socket, ``close_at_expiry``).
Frames larger than the schema's cap are answered with an ``error`` rather than a dropped
connection, so one bad message costs a client nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from common.tasks import stop_tasks
from signaling.bus import Subscription
from signaling.errors import ApiError, StoreUnavailable, bad_request, forbidden
from signaling.live.gateway import EventGateway, allowed
from signaling.live.schema import MAX_EVENT_BYTES, pack, packed_error
from signaling.room_names import require_room_name
from signaling.service import SIGNALING_KEY
from signaling.tokens import Claims, Grant, authorize

logger = logging.getLogger("shopcast.signaling.live.ws")

PATH = "/ws/events/{room}"
CLOSE_BANNED = 4003
CLOSE_EXPIRED = 4001  # the token's exp passed: reconnect with a new token
CLOSE_TRY_LATER = 1013  # RFC 6455 "try again later": the store was unavailable
MAX_EPOCH = 64
MAX_FRAME = 4 * MAX_EVENT_BYTES  # larger frames close the socket; up to this, an error reply
JOIN_GRANTS = (Grant.SUBSCRIBE, Grant.CHAT, Grant.ADMIN)


def _claims(request: web.Request, room: str) -> Claims:
    require_room_name(room)  # the rule of every door, before the token says anything
    secret = request.app[SIGNALING_KEY].settings.secret
    claims = authorize(secret, request.headers.get("Authorization"),
                       query_token=request.query.get("token"))
    if not claims.covers(room):
        raise forbidden(f"token is for room {claims.room!r}, not {room!r}", "wrong_room")
    if not any(allowed(claims, grant) for grant in JOIN_GRANTS):
        raise forbidden("token needs the subscribe, chat or admin grant", "missing_grant")
    return claims


def _after_seq(request: web.Request) -> int | None:
    raw = request.query.get("after_seq")
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise bad_request("after_seq must be a non-negative integer", "bad_after_seq")
    return int(raw)


async def stream_room(
    gateway: EventGateway, room: str, after_seq: int | None,
    send: Callable[[bytes], Awaitable[None]],
    forward: Callable[[Subscription], Coroutine[Any, Any, Any]],
    read: Callable[[], Coroutine[Any, Any, None]], epoch: str = "",
) -> asyncio.Task[Any]:
    """A room to one socket: the events after ``after_seq`` when they are within the resume
    caps (``EventGateway.replay``), else ``state``; then the room's events through ``forward``
    while ``read`` takes the client's messages, until either ends. Returns the forwarding task
    (done, or cancelled), for its result."""
    missed = None if after_seq is None else await gateway.replay(room, after_seq, epoch)
    if after_seq is not None and missed is not None:
        for packed in missed:
            await send(packed)
        start = after_seq + len(missed)
    else:
        state = await gateway.state(room)
        await send(pack(state))
        start, epoch = int(state["seq"]), str(state["epoch"])
    async with gateway.bus.subscribe(room, after_seq=start, epoch=epoch) as sub:
        sender: asyncio.Task[Any] = asyncio.create_task(forward(sub))
        reader: asyncio.Task[None] = asyncio.create_task(read())
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_tasks((reader, sender))
    return sender


class _Socket:
    """One client: a sender of bus events and a reader of client messages, one send lock."""

    def __init__(self, ws: web.WebSocketResponse, gateway: EventGateway, room: str,
                 claims: Claims) -> None:
        self.ws = ws
        self.gateway = gateway
        self.room = room
        self.claims = claims
        self.budget = gateway.resume_budget()  # this socket's resumes
        self._lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self.ws.send_bytes(data)

    async def forward(self, sub: Subscription) -> bool:
        """Send the room's events until this client is kicked (then True)."""
        async for event in sub:
            await self.send(event.packed)
            if event.type == "kicked" and event.data.get("identity") == self.claims.identity:
                return True
        return False

    async def read(self) -> None:
        async for message in self.ws:
            if message.type == WSMsgType.BINARY:
                replies = await self.gateway.handle(self.room, self.claims, message.data,
                                                    self.budget)
                for reply in replies:
                    await self.send(reply)
            elif message.type == WSMsgType.TEXT:
                await self.send(packed_error("bad_frame", "send binary msgpack frames"))
            else:
                break


def close_at_expiry(ws: web.WebSocketResponse, claims: Claims,
                    send: Callable[[bytes], Awaitable[None]]) -> asyncio.TimerHandle | None:
    """Close ``ws`` at its token's ``exp``: ``error token_expired`` through ``send`` (the
    socket's own, with its lock), then close code 4001. One ``call_later`` per socket, not a
    poll; the caller cancels the handle when the socket ends first."""
    if claims.expires_at <= 0:
        return None
    delay = max(0.0, claims.expires_at - time.time())
    return asyncio.get_running_loop().call_later(delay, _expire, ws, send)


_expiring: set[asyncio.Task[None]] = set()  # closes under way, kept until done


def _expire(ws: web.WebSocketResponse, send: Callable[[bytes], Awaitable[None]]) -> None:
    task = asyncio.create_task(_close_expired(ws, send))
    _expiring.add(task)
    task.add_done_callback(_expiring.discard)


async def _close_expired(ws: web.WebSocketResponse,
                         send: Callable[[bytes], Awaitable[None]]) -> None:
    if ws.closed:
        return
    with contextlib.suppress(Exception):  # a socket going away anyway is closed just the same
        await send(packed_error("token_expired", "your token expired: reconnect with a new one"))
    await ws.close(code=CLOSE_EXPIRED, message=b"token_expired")


def _resume_limited(wait_s: float) -> web.Response:
    error = ApiError(429, "resume_limited",
                     f"too many reconnects with after_seq: retry in {wait_s:.1f} s")
    response = error.to_response()
    response.headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
    return response


async def events_socket(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    claims = _claims(request, room)
    after_seq = _after_seq(request)
    gateway = request.app[SIGNALING_KEY].live
    if await gateway.is_banned(room, claims.identity):
        raise forbidden("you are banned from this room", "banned")
    if after_seq is not None:
        wait_s = gateway.reconnect_wait(room, claims.identity)
        if wait_s > 0:
            return _resume_limited(wait_s)
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30.0)
    await ws.prepare(request)
    socket = _Socket(ws, gateway, room, claims)
    expiry = close_at_expiry(ws, claims, socket.send)
    try:
        sender = await stream_room(gateway, room, after_seq, socket.send, socket.forward,
                                   socket.read, request.query.get("epoch", "")[:MAX_EPOCH])
    except StoreUnavailable:  # Redis went away while joining: try again later
        await ws.close(code=CLOSE_TRY_LATER, message=b"store_unavailable")
        return ws
    finally:
        if expiry is not None:
            expiry.cancel()
    kicked = sender.done() and not sender.cancelled() and sender.exception() is None \
        and sender.result()
    if kicked:
        await ws.close(code=CLOSE_BANNED, message=b"banned")
    else:
        await ws.close()
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, events_socket)
