"""The RTMP ingest server: accepts publishes from OBS, ffmpeg and hardware encoders.

Written here rather than taken from pyrtmp because ShopCast needs only the publish half of the
protocol, and needs it on its own terms: size limits checked before a byte is buffered,
timeouts at every stage before a publish is authorized, refusals that reach the encoder as
``onStatus`` errors, and one connection's garbage never touching another. The pieces:
``handshake.py`` (C0-C2), ``chunks.py`` (chunk stream demux and mux), ``amf0.py`` (command
values), ``connection.py`` (one client), ``contract.py`` (what the SFU sees). Playback over
RTMP is refused; viewers use WebRTC or HTTP-FLV.

The server accepts; each connection is an ``RtmpConnection`` that calls the publish handler
once it has a ``publish`` and then feeds the returned sink. The server only keeps the books:
how many connections are open, and how many per IP are not yet publishing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from sfu.rtmp.connection import RtmpConnection, State
from sfu.rtmp.contract import (
    PUBLISH_BAD_NAME,
    PUBLISH_UNAUTHORIZED,
    PublishHandler,
    PublishRequest,
    RtmpLimits,
    RtmpRefused,
    StreamSink,
)

__all__ = [
    "PUBLISH_BAD_NAME",
    "PUBLISH_UNAUTHORIZED",
    "PublishHandler",
    "PublishRequest",
    "RtmpConnection",
    "RtmpLimits",
    "RtmpRefused",
    "RtmpServer",
    "StreamSink",
]

logger = logging.getLogger("shopcast.sfu.rtmp")


class RtmpServer:
    """Listens on ``host:port`` (port 0 picks one; see ``port``) and serves publishes."""

    def __init__(self, handler: PublishHandler, *, host: str, port: int,
                 limits: RtmpLimits = RtmpLimits()) -> None:  # noqa: B008 - frozen dataclass
        self.handler = handler
        self.host = host
        self.limits = limits
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[RtmpConnection] = set()
        self._unauthenticated: Counter[str] = Counter()
        self._counted: set[RtmpConnection] = set()  # those in _unauthenticated
        self.refused: Counter[str] = Counter()  # connections refused or cut before a publish
        """By reason, for /metrics (the door counts the publishes it refuses itself)."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: RtmpConnection(self), self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("rtmp listening on %s:%d", self.host, self.port)

    @property
    def port(self) -> int:
        """The bound port once started (the one the OS picked for port 0)."""
        return self._port

    @property
    def connections(self) -> frozenset[RtmpConnection]:
        """Open connections, publishing or not."""
        return frozenset(self._connections)

    def publishing(self) -> list[RtmpConnection]:
        return [c for c in self._connections if c.state is State.PUBLISHING]

    async def close(self) -> None:
        """Stop listening and close every connection (a publishing sink gets "closed")."""
        if self._server is not None:
            self._server.close()
        tasks = []
        for connection in list(self._connections):
            task = connection._task
            connection.close("closed")
            if task is not None:
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # --- the books, kept by the connections ------------------------------------------------------

    def _admit(self, connection: RtmpConnection) -> str | None:
        """Count a new connection in, or say why it is refused."""
        if len(self._connections) >= self.limits.max_connections:
            self.refused["too_many_connections"] += 1
            return "too many connections"
        if self._unauthenticated[connection.ip] >= self.limits.max_unauthenticated_per_ip:
            self.refused["too_many_unauthenticated"] += 1
            return "too many connections not publishing from this address"
        self._connections.add(connection)
        self._unauthenticated[connection.ip] += 1
        self._counted.add(connection)
        return None

    def _promote(self, connection: RtmpConnection) -> None:
        """The connection publishes now: it no longer counts against its IP's pending quota."""
        self._uncount(connection)

    def _forget(self, connection: RtmpConnection) -> None:
        self._connections.discard(connection)
        self._uncount(connection)

    def _uncount(self, connection: RtmpConnection) -> None:
        if connection in self._counted:
            self._counted.discard(connection)
            self._unauthenticated[connection.ip] -= 1
            if self._unauthenticated[connection.ip] <= 0:
                del self._unauthenticated[connection.ip]
