"""``GET /live/{room}.flv?ticket=...``: chunked ``video/x-flv``, H.264 + AAC, from a keyframe.

Statuses: 400 bad room name; 401/403 credential problems: a ``?ticket=`` from the playback
plan (``signaling/flv_tickets.py``: ``invalid_ticket``, ``ticket_expired``, ``wrong_room``), an
``Authorization: Bearer`` token, or a ``?token=`` only with ``--flv-plain-token`` (else ``401
ticket_required``); a started response is not cut when its ticket expires; 403 ``banned`` for
an identity banned from the room and ``room_forbidden`` while the room is forbidden (the same
checks as WHIP/WHEP and RTMP), and an open response ends when its identity is banned or kicked
(``NodeMediaControl.end_identity``); 404
``not_found`` for a room this node does not have (``307`` to the node where it is live, on a
multi-node deployment); 503 ``not_live`` (with ``Retry-After``) for a room that exists but
has no live publisher yet, or whose stream has not produced its first keyframe (this door's
own answer, not ``NotLive``'s 404: a player retries after ``Retry-After``). Media errors get
their statuses from ``sfu/http_errors.py``.

After the response headers go out, the room's flush tick writes straight to the transport
(one chunk per tick, see viewer_queue.py); the handler only waits for the reader to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
from collections.abc import Callable

from aiohttp import web

from sfu.errors import RoomNotFound, require_room_name
from sfu.flv.manager import FLV_KEY
from sfu.flv.viewer_queue import FlvReader
from sfu.http_errors import media_errors
from sfu.node import NODE_KEY
from sfu.whip_whep import SECRET_KEY, elsewhere, refuse_banned_or_forbidden
from signaling.errors import ApiError
from signaling.flv_tickets import flv_claims
from signaling.routing import redirect

RETRY_AFTER_S = 2


def _not_live(room: str, why: str) -> web.Response:
    response = ApiError(503, "not_live", f"room {room!r} {why}").to_response()
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _kernel_queue(fd: int) -> Callable[[], int]:
    """Bytes in the socket's send queue the client has not acknowledged (Linux TIOCOUTQ)."""
    empty = b"\0\0\0\0"

    def unsent() -> int:
        try:
            value: int = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, empty))[0]
        except OSError:
            return 0
        return value

    return unsent


@media_errors
async def play_flv(request: web.Request) -> web.StreamResponse:
    room = request.match_info["room"]
    require_room_name(room)
    manager = request.app[FLV_KEY]
    claims = flv_claims(request.app[SECRET_KEY], room,
                        authorization=request.headers.get("Authorization"),
                        ticket=request.query.get("ticket"), query_token=request.query.get("token"),
                        plain_token=manager.settings.plain_token)
    await refuse_banned_or_forbidden(request, room, claims)
    output = manager.outputs.get(room)
    if output is None or output.closed:
        target = await elsewhere(request, room, publish=False)  # multi-node: live elsewhere
        if target is not None:
            return redirect(target, request)
        if room not in request.app[NODE_KEY].rooms:
            raise RoomNotFound(f"room {room!r} does not exist on this node")
        return _not_live(room, "is not live")
    if not output.live:
        output.request_keyframe()
        return _not_live(room, "is starting: waiting for the first keyframe")

    response = web.StreamResponse(
        headers={
            "Content-Type": "video/x-flv",
            "Cache-Control": "no-cache, no-store",
            "Access-Control-Allow-Origin": request.headers.get("Origin", "*"),
            "Vary": "Origin",
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)  # StreamResponse sends its headers right here
    transport = request.transport
    if transport is None or transport.is_closing():
        return response
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # keep a slow reader's backlog where we measure it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, manager.settings.send_buffer_bytes)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done = asyncio.Event()
    unsent = _kernel_queue(sock.fileno()) if sock is not None else None

    def ended(reader: FlvReader) -> None:
        done.set()

    reader = output.add_reader(transport, ended, unsent, identity=claims.identity)
    try:
        await done.wait()
    finally:
        if not reader.closed:
            reader.close("cancelled")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/live/{room}.flv", play_flv)
