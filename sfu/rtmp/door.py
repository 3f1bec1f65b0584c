"""The RTMP door: ``rtmp://HOST:PORT/live/{room}?token=...`` (OBS: Server ``rtmp://HOST:PORT/live``,
Stream Key ``{room}?token=...``, the SRS convention).

The same authorization step as WHIP runs before any media is accepted: the token is verified
(signature, expiry), it must carry ``publish`` (or ``cohost`` for a co-host slot) for this
room, the room name must be valid, the identity must not be banned from the room, the room
must not be forbidden (``room_forbidden`` with the reason), and the node decides the slot
(anchor taken, room full, no invitation). Refusals reach the encoder as an ``onStatus``
error with the same machine code the HTTP doors use, and the connection is closed: nothing
is left behind. This is the one place where domain and token errors become RTMP statuses.

Multi-node: RTMP cannot be redirected (OBS does not follow), so an encoder publishes straight
to a node and the room is placed where the publish lands (``placement``); a room already live
on another node is refused with that node's name.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from sfu.errors import MediaError
from sfu.rtmp.connection import RtmpConnection
from sfu.rtmp.contract import (
    PUBLISH_BAD_NAME,
    PUBLISH_UNAUTHORIZED,
    PublishRequest,
    RtmpRefused,
    StreamSink,
)
from sfu.rtmp.server import RtmpServer
from signaling.claims import Claims
from signaling.errors import ApiError
from signaling.room_names import ROOM_NAME_RULE, valid_room_name
from signaling.tokens import authorize

logger = logging.getLogger("shopcast.sfu.rtmp")

APP = "live"
BAD_NAME = PUBLISH_BAD_NAME
UNAUTHORIZED = PUBLISH_UNAUTHORIZED

Publish = Callable[[str, Claims, RtmpConnection], Awaitable[StreamSink]]
"""(room, claims, connection) -> the session's sink; raises MediaError (the node's rules)."""

RtmpPlacement = Callable[[str], Awaitable[str | None]]
"""room -> None when this node may serve it (placing it here), else the owner's name."""

BanCheck = Callable[[str, str], Awaitable[bool]]
"""(room, identity) -> is this identity banned from the room (the control plane's moderation)?"""

ForbidCheck = Callable[[str], Awaitable[ApiError | None]]
"""room -> the ``403 room_forbidden`` while the room is forbidden (``sfu.node.ForbidCheck``)."""


def refusal(error: Exception) -> RtmpRefused:
    """A domain or token error as the encoder sees it: ``onStatus`` level error, code, text."""
    if isinstance(error, ApiError):
        status = UNAUTHORIZED if error.status in (401, 403) else BAD_NAME
        return RtmpRefused(status, f"{error.code}: {error.message}")
    if isinstance(error, MediaError):
        return RtmpRefused(BAD_NAME, f"{error.code}: {error.message}")
    return RtmpRefused(BAD_NAME, "internal_error: the publish could not be started")


class RtmpDoor:
    """Authorizes RTMP publishes and hands them to the node."""

    def __init__(self, publish: Publish, secret: str, *, host: str, port: int,
                 placement: RtmpPlacement | None = None, banned: BanCheck | None = None,
                 forbidden: ForbidCheck | None = None) -> None:
        self._publish = publish
        self._secret = secret
        self._placement = placement
        self._banned = banned
        self._forbidden = forbidden
        self.server = RtmpServer(self._on_publish, host=host, port=port)
        self.refused: dict[str, int] = {}  # code -> publishes refused, for /metrics

    async def start(self) -> None:
        await self.server.start()
        logger.info("RTMP ingest on rtmp://%s:%d/%s/{room}?token=...", self.server.host,
                    self.server.port, APP)

    async def close(self) -> None:
        await self.server.close()

    async def _on_publish(self, request: PublishRequest, connection: RtmpConnection
                          ) -> StreamSink:
        try:
            return await self._authorize_and_publish(request, connection)
        except (ApiError, MediaError) as exc:
            refused = refusal(exc)
            code = exc.code
        except RtmpRefused as exc:
            refused, code = exc, "refused"
        self.refused[code] = self.refused.get(code, 0) + 1
        logger.info("RTMP publish refused peer=%s app=%s stream=%s: %s", request.peer,
                    request.app, request.stream, refused.description)
        raise refused

    async def _authorize_and_publish(self, request: PublishRequest,
                                     connection: RtmpConnection) -> StreamSink:
        if request.app.strip("/") != APP:
            raise RtmpRefused(BAD_NAME, f"bad_app: publish to rtmp://HOST:PORT/{APP}/ROOM")
        room = request.stream
        if not valid_room_name(room):
            raise RtmpRefused(BAD_NAME, f"bad_room: {ROOM_NAME_RULE}")
        token = request.query.get("token", "")
        if not token:
            raise RtmpRefused(UNAUTHORIZED, "missing_token: add ?token=<token with publish> "
                                            "to the stream key")
        claims = authorize(self._secret, None, query_token=token, publish=True, room=room)
        if self._banned is not None and await self._banned(room, claims.identity):
            raise RtmpRefused(UNAUTHORIZED, f"banned: {claims.identity!r} is banned from room "
                                            f"{room!r}")
        if self._forbidden is not None and (forbid := await self._forbidden(room)):
            raise forbid  # onStatus NetStream.Publish.Unauthorized "room_forbidden: <reason>"
        if self._placement is not None:
            owner = await self._placement(room)
            if owner is not None:
                raise RtmpRefused(BAD_NAME, f"room_elsewhere: room {room!r} is live on node "
                                            f"{owner}; publish there")
        return await self._publish(room, claims, connection)


RTMP_KEY = web.AppKey("rtmp_door", RtmpDoor)
