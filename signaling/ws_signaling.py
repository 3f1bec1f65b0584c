"""``GET /ws``: one WebSocket per page for signaling and room events (WHIP/WHEP's alternative).

Frames are binary msgpack maps with a ``type``, like ``/ws/events``. The first message joins:

- ``join {room}`` -> ``joined {session, room, identity, resume_s}``, then the room's ``state``
  and its events in ``seq`` order (exactly what ``/ws/events`` sends);
- ``resume {session, after_seq}`` (a new socket, same token identity, within ``resume_s`` of the
  old one dropping) -> ``resumed {session, room}``, then the events after ``after_seq`` (or a
  fresh ``state`` when history no longer reaches back, the events are over the resume caps, or
  the session resumed too often); the session's media legs lived on. Resumes, on connect and
  as messages, share one bucket per session (``signaling/live/resume.py``).

Then, each answered to the sender only and echoing its ``cid``:

- ``publish {sdp}`` / ``subscribe {sdp}`` -> ``answer {leg, sdp}``: the offer/answer of WHIP /
  WHEP with the same rules and error codes; ``redirect {url}`` when the room is served by
  another node (open ``url`` + ``/ws`` there and join again);
- ``close {leg}`` -> ``closed {leg}``; ``ping`` -> ``pong {server_ms}``;
- anything else is a room event (``chat``, ``like``, ``purchase``, ...; docs/events.md) for the
  same ``EventGateway`` as the data channel.

Refusals are ``error {code, message, cid}`` and change nothing. Legs opened over the socket
outlive it for ``resume_s``: a page that reconnects in time keeps playing and publishing without
renegotiating; after that they are closed. aiohttp pings the socket every ``HEARTBEAT_S`` and
drops it when a pong is missing, which starts the same grace period. At the socket's token's
``exp`` it gets ``error token_expired`` and is closed with code 4001 (the same grace period: a
page resumes with a new token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from signaling.door_refusals import count_refusal
from signaling.errors import ApiError, StoreUnavailable, forbidden
from signaling.live.gateway import EventGateway, allowed
from signaling.live.resume import ResumeBudget
from signaling.live.schema import MAX_EVENT_BYTES, pack, packed_error
from signaling.live.websocket import CLOSE_TRY_LATER, close_at_expiry, stream_room
from signaling.negotiation import MAX_SDP_BYTES, Elsewhere, Negotiator
from signaling.room_names import ROOM_NAME_RULE, valid_room_name
from signaling.service import SIGNALING_KEY
from signaling.tokens import Claims, Grant, authorize

logger = logging.getLogger("shopcast.signaling.ws")

PATH = "/ws"
HEARTBEAT_S = 15.0
JOIN_GRANTS = (Grant.SUBSCRIBE, Grant.PUBLISH, Grant.COHOST, Grant.CHAT, Grant.ADMIN)
SIGNALING = {"publish", "subscribe", "close", "ping"}


class Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class Session:
    """A page's signaling session: its room, identity and media legs; survives its socket for
    the resume grace period."""

    id: str
    room: str
    claims: Claims
    legs: set[str] = field(default_factory=set)
    socket: web.WebSocketResponse | None = None
    expiry: asyncio.TimerHandle | None = None
    budget: ResumeBudget | None = None  # its resumes, across its sockets (EventGateway's)
    address: str | None = None  # its socket's client address: the node's per-address limit


class WsSignaling:
    """Sessions of this process and the media plane they negotiate with."""

    def __init__(self, negotiator: Negotiator, resume_s: float = 15.0) -> None:
        self.negotiator = negotiator
        self.resume_s = resume_s
        self.sessions: dict[str, Session] = {}
        self._ending: set[asyncio.Task[None]] = set()

    def open(self, room: str, claims: Claims) -> Session:
        session = Session("W_" + uuid.uuid4().hex[:12], room, claims)
        self.sessions[session.id] = session
        return session

    def resume(self, session_id: str, claims: Claims) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.claims.identity != claims.identity:
            raise Refused("unknown_session", "no such session to resume (expired?): join again")
        if session.socket is not None and not session.socket.closed:
            raise Refused("session_in_use", "that session has a socket already")
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        return session

    def detach(self, session: Session) -> None:
        """The socket went away: its legs live on for ``resume_s``, then close."""
        session.socket = None
        if not session.legs:
            self.sessions.pop(session.id, None)
            return
        session.expiry = asyncio.get_running_loop().call_later(
            self.resume_s, self._end_later, session)

    def _end_later(self, session: Session) -> None:
        task = asyncio.create_task(self.end(session))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def end(self, session: Session) -> None:
        if session.socket is not None:
            return  # resumed meanwhile
        self.sessions.pop(session.id, None)
        for leg in list(session.legs):
            with contextlib.suppress(Exception):
                await self.negotiator.close(session.room, leg)
        logger.info("ws session %s expired: %d legs closed", session.id, len(session.legs))
        session.legs.clear()

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            if session.expiry is not None:
                session.expiry.cancel()
            session.socket = None
            await self.end(session)


WS_KEY = web.AppKey("ws_signaling", WsSignaling)


def _claims(request: web.Request) -> Claims:
    claims = authorize(request.app[SIGNALING_KEY].settings.secret,
                       request.headers.get("Authorization"), query_token=request.query.get("token"))
    if not any(allowed(claims, grant) for grant in JOIN_GRANTS):
        raise forbidden("the token grants nothing to join with", "missing_grant")
    return claims


async def _first(ws: web.WebSocketResponse) -> dict[str, Any] | None:
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            data = _decode(message.data)
            if data is not None:
                return data
        elif message.type != WSMsgType.TEXT:
            return None  # an oversized or broken frame: aiohttp is already closing the socket
        await ws.send_bytes(packed_error("bad_frame", "send binary msgpack maps"))
    return None


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("type"), str) else None


class _Connection:
    """One socket of a session: room events out, signaling and live messages in."""

    def __init__(self, ws: web.WebSocketResponse, signaling: WsSignaling, session: Session,
                 gateway: EventGateway, app: web.Application) -> None:
        self.ws, self.signaling, self.session, self.gateway = ws, signaling, session, gateway
        self.app = app  # its door refusals
        self._lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self.ws.send_bytes(data)

    async def run(self, after_seq: int | None) -> None:
        await stream_room(self.gateway, self.session.room, after_seq, self.send, self._forward,
                          self._read)

    async def _forward(self, sub: Any) -> None:
        async for event in sub:
            await self.send(event.packed)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != WSMsgType.BINARY:
                if message.type == WSMsgType.TEXT:
                    await self.send(packed_error("bad_frame", "send binary msgpack maps"))
                    continue
                break
            data = _decode(message.data)
            if data is None:
                await self.send(
                    packed_error("malformed", "a message is a msgpack map with a 'type'"))
            elif data["type"] in SIGNALING:
                await self.send(await self._signal(data))
            else:  # chat, like, purchase, ...: the room's live events
                session = self.session
                replies = await self.gateway.handle(session.room, session.claims, message.data,
                                                    session.budget)
                for reply in replies:
                    await self.send(reply)

    async def _signal(self, data: dict[str, Any]) -> bytes:
        kind, cid = data["type"], data.get("cid")
        session, negotiator = self.session, self.signaling.negotiator
        try:
            if kind == "ping":
                return pack({"type": "pong", "cid": cid, "server_ms": int(time.time() * 1000)})
            if kind == "close":
                leg = str(data.get("leg", ""))
                if leg not in session.legs:
                    raise Refused("not_found", f"no leg {leg!r} in this session")
                session.legs.discard(leg)
                await negotiator.close(session.room, leg)
                return pack({"type": "closed", "leg": leg, "cid": cid})
            sdp = data.get("sdp")
            if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP_BYTES:
                raise Refused("malformed_sdp", f"{kind} needs an SDP offer in 'sdp'")
            negotiate = negotiator.publish if kind == "publish" else negotiator.play
            leg, answer = await negotiate(session.room, session.claims, sdp,
                                          address=session.address)
            session.legs.add(leg)
            return pack({"type": "answer", "leg": leg, "sdp": answer, "cid": cid})
        except Elsewhere as moved:
            return pack({"type": "redirect", "url": moved.url, "cid": cid})
        except (Refused, ApiError) as exc:
            count_refusal(self.app, "ws", exc.code)
            return packed_error(exc.code, exc.message, cid)


async def ws_signaling(request: web.Request) -> web.StreamResponse:
    claims = _claims(request)
    signaling = request.app[WS_KEY]
    gateway = request.app[SIGNALING_KEY].live
    ws = web.WebSocketResponse(max_msg_size=MAX_SDP_BYTES + 4 * MAX_EVENT_BYTES,
                               heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    first = await _first(ws)
    if first is None:
        return ws
    try:
        session, after_seq, reply = await _join(signaling, gateway, claims, first)
    except (Refused, StoreUnavailable) as exc:
        count_refusal(request.app, "ws", exc.code)
        await ws.send_bytes(packed_error(exc.code, exc.message, first.get("cid")))
        await ws.close()
        return ws
    session.socket, session.address = ws, request.remote
    if first.get("cid") is not None:
        reply["cid"] = first["cid"]
    await ws.send_bytes(pack(reply))
    connection = _Connection(ws, signaling, session, gateway, request.app)
    expiry = close_at_expiry(ws, claims, connection.send)  # this socket's token, at its exp
    try:
        await connection.run(after_seq)
    except StoreUnavailable:  # Redis went away while joining: the page joins again later
        await ws.close(code=CLOSE_TRY_LATER, message=b"store_unavailable")
    finally:
        if expiry is not None:
            expiry.cancel()
        signaling.detach(session)
        if not ws.closed:
            await ws.close()
    return ws


async def _join(signaling: WsSignaling, gateway: EventGateway, claims: Claims,
                first: dict[str, Any]) -> tuple[Session, int | None, dict[str, Any]]:
    """The first message: a new session in a room, or an old one back; and the reply."""
    if first["type"] == "join":
        room = first.get("room")
        if not isinstance(room, str) or not valid_room_name(room):
            raise Refused("bad_room", ROOM_NAME_RULE)
        if not claims.covers(room):
            raise Refused("wrong_room", f"this token is for room {claims.room!r}")
        if await gateway.is_banned(room, claims.identity):
            raise Refused("banned", "you are banned from this room")
        session = signaling.open(room, claims)
        session.budget = gateway.resume_budget()
        return session, None, {"type": "joined", "session": session.id, "room": room,
                               "identity": claims.identity, "resume_s": signaling.resume_s}
    if first["type"] == "resume":
        after = first.get("after_seq")
        session = signaling.resume(str(first.get("session", "")), claims)
        reply = {"type": "resumed", "session": session.id, "room": session.room,
                 "legs": sorted(session.legs)}
        if not isinstance(after, int) or after < 0:
            return session, None, reply
        if session.budget is None:
            session.budget = gateway.resume_budget()
        if session.budget.take() > 0:  # resumed too often: a fresh state, not the history
            gateway.resume_limited["rate"] += 1
            return session, None, reply
        return session, after, reply
    raise Refused("join_first", "the first message is join {room} or resume {session}")


def add_routes(app: web.Application, signaling: WsSignaling) -> None:
    app[WS_KEY] = signaling
    app.router.add_get(PATH, ws_signaling)

    async def close_sessions(app: web.Application) -> None:
        await signaling.close()

    app.on_shutdown.append(close_sessions)
