"""The local channels between the publisher's process and its worker processes.

Media: one SOCK_SEQPACKET socketpair per worker; each message is a 5-byte prefix (producer key,
keyframe flag) and one canonical RTP packet, sent once per worker, not once per viewer.
Control: another socketpair carrying msgpack maps (``{"op": ...}``), requests with a ``req`` id.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

import msgpack
from aiortc import RTCRtpCodecParameters

logger = logging.getLogger("shopcast.sfu.ipc")

MEDIA_PREFIX = struct.Struct("!IB")
BUFFER_BYTES = 4 * 1024 * 1024
MAX_MESSAGE = 256 * 1024
REQUEST_TIMEOUT_S = 15.0

Message = dict[str, Any]


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A message-preserving, non-blocking pair with large buffers (media bursts at keyframes)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        sock.setblocking(False)
    return a, b


def codec_to_dict(codec: RTCRtpCodecParameters) -> dict[str, Any]:
    return {
        "mimeType": codec.mimeType,
        "clockRate": codec.clockRate,
        "channels": codec.channels,
        "payloadType": codec.payloadType,
        "parameters": dict(codec.parameters),
    }

def codec_from_dict(data: dict[str, Any]) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(**data)



class MediaSender:
    """Sends canonical packets to one worker; a full buffer drops (NACK heals), never blocks."""

    __slots__ = ("_send", "dropped", "sent")

    def __init__(self, sock: socket.socket) -> None:
        self._send = sock.send
        self.sent = 0
        self.dropped = 0

    def send(self, key: int, keyframe: bool, packet: bytes) -> None:
        try:
            self._send(MEDIA_PREFIX.pack(key, keyframe) + packet)
            self.sent += 1
        except (BlockingIOError, ConnectionError, OSError):
            self.dropped += 1


def read_media(
    sock: socket.socket, deliver: Callable[[int, bool, bytes], None]
) -> Callable[[], None]:
    """A reader callback that drains every waiting packet and hands it to ``deliver``."""
    recv = sock.recv

    def on_readable() -> None:
        while True:
            try:
                data = recv(65536)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            key, keyframe = MEDIA_PREFIX.unpack_from(data)
            deliver(key, bool(keyframe), data[5:])

    return on_readable


class ControlChannel:
    """msgpack messages both ways over one socket; requests are matched to replies by id."""

    def __init__(self, sock: socket.socket, on_message: Callable[[Message], None]) -> None:
        self._sock = sock
        self._on_message = on_message
        self._outbox: collections.deque[bytes] = collections.deque()
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, message: Message) -> None:
        """Queue a message; never blocks the caller (a media callback may send)."""
        if self.closed:
            return
        self._outbox.append(msgpack.packb(message))
        self._flush()

    async def request(self, message: Message) -> Message:
        """Send a request and wait (at most REQUEST_TIMEOUT_S) for the reply with its ``req``."""
        req = next(self._ids)
        future: asyncio.Future[Message] = self._loop.create_future()
        self._pending[req] = future
        self.send({**message, "req": req})
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await future
        finally:
            self._pending.pop(req, None)

    def reply(self, request: Message, message: Message) -> None:
        self.send({**message, "req": request["req"], "reply": True})

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("worker channel closed"))
        self._sock.close()

    def _flush(self) -> None:
        while self._outbox:
            try:
                self._sock.send(self._outbox[0])
            except BlockingIOError:
                if not self._writing:
                    self._writing = True
                    self._loop.add_writer(self._sock.fileno(), self._on_writable)
                return
            except OSError:
                self.close()
                return
            self._outbox.popleft()

    def _on_writable(self) -> None:
        self._writing = False
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _on_readable(self) -> None:
        while not self.closed:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the other side is gone
                self.close()
                self._on_message({"op": "channel_closed"})
                return
            try:
                message: Message = msgpack.unpackb(data, strict_map_key=False)
            except ValueError:
                logger.exception("undecodable control message dropped")
                continue
            if message.get("reply"):
                future = self._pending.get(message["req"])
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._on_message(message)
