"""The local channels between the publisher's process and its worker processes.

Media: one SOCK_SEQPACKET socketpair per worker; each message is a 5-byte prefix (producer key,
keyframe flag) and one canonical RTP packet, sent once per worker, not once per viewer.
Control: another socketpair carrying the declared messages of ``sfu/worker_protocol.py`` as
msgpack maps, dispatched through a table; requests carry a ``req`` id, replies ``req`` and
``reply``. A message that does not decode to a declared op for this side is logged and counted,
never dropped silently and never raised into the loop.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgpack

from sfu.background import spawn
from sfu.worker_protocol import (
    Direction,
    ProtocolError,
    Reason,
    WorkerMessage,
    decode,
    encode,
    ops,
)

logger = logging.getLogger("shopcast.sfu.ipc")

MEDIA_PREFIX = struct.Struct("!IB")
BUFFER_BYTES = 4 * 1024 * 1024
MAX_MESSAGE = 256 * 1024
REQUEST_TIMEOUT_S = 15.0
BAD_LOG_INTERVAL_S = 60.0  # one log line per reason and op per minute, however many arrive
BAD_LOG_KEYS = 256  # bound on the (reason, op) pairs remembered (a peer may send any op)

M = TypeVar("M", bound=WorkerMessage)
R = TypeVar("R", bound=WorkerMessage)


def socketpair() -> tuple[socket.socket, socket.socket]:
    """A message-preserving, non-blocking pair with large buffers (media bursts at keyframes)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (a, b):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER_BYTES)
        sock.setblocking(False)
    return a, b


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


class Dispatch:
    """The op -> handler table of one side; it must cover every op that side receives."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.requests: dict[str, Callable[[Any], Awaitable[WorkerMessage]]] = {}

    def on(self, cls: type[M], handler: Callable[[M], None]) -> None:
        self._check_new(cls)
        if cls.reply_type is not None:
            raise ValueError(f"{cls.op} is a request: use on_request")
        self.handlers[cls.op] = handler

    def on_request(self, cls: type[M], handler: Callable[[M], Awaitable[WorkerMessage]]) -> None:
        """``handler``'s result is sent back as the reply (its type must be ``cls.reply_type``)."""
        self._check_new(cls)
        if cls.reply_type is None:
            raise ValueError(f"{cls.op} is not a request: use on")
        self.requests[cls.op] = handler

    def check(self) -> None:
        """Refuse to start with a table that misses an op this side receives."""
        missing = ops(self.direction) - set(self.handlers) - set(self.requests)
        if missing:
            raise ValueError(f"no handler for {sorted(missing)} ({self.direction.value})")

    def _check_new(self, cls: type[WorkerMessage]) -> None:
        if cls.direction is not self.direction:
            raise ValueError(f"{cls.op} is {cls.direction.value}, not {self.direction.value}")
        if cls.op in self.handlers or cls.op in self.requests:
            raise ValueError(f"{cls.op} has a handler already")


class BadMessageLog:
    """Structured log lines for refused messages, at most one per reason and op per minute."""

    def __init__(self, interval_s: float = BAD_LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def report(self, error: ProtocolError, peer: str) -> bool:
        """Log ``error`` unless its kind was logged within the interval; True if logged."""
        now = time.monotonic()
        key = (error.reason.value, error.op[:64])
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._last) >= BAD_LOG_KEYS:
            self._last.clear()
        self._last[key] = now
        logger.warning(
            "bad control message refused reason=%s op=%r peer=%s detail=%r",
            error.reason.value, key[1], peer, error.detail[:200],
        )
        return True


BAD_MESSAGES = BadMessageLog()


class ControlChannel:
    """Declared messages both ways over one socket; requests are matched to replies by id."""

    def __init__(
        self, sock: socket.socket, dispatch: Dispatch, on_closed: Callable[[], None],
        peer: str = "peer",
    ) -> None:
        dispatch.check()
        self._sock = sock
        self._dispatch = dispatch
        self._on_closed = on_closed
        self.peer = peer
        self.bad: collections.Counter[str] = collections.Counter()  # reason -> refused
        self._outbox: collections.deque[bytes] = collections.deque()
        self._pending: dict[int, tuple[asyncio.Future[WorkerMessage], type[WorkerMessage]]] = {}
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        self._writing = False
        self.closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def send(self, message: WorkerMessage) -> None:
        """Queue a message; never blocks the caller (a media callback may send)."""
        self._send_map(encode(message))

    async def request(self, message: WorkerMessage, reply_type: type[R]) -> R:
        """Send a request and wait (at most REQUEST_TIMEOUT_S) for its reply."""
        if message.reply_type is not reply_type:
            raise TypeError(f"{message.op} is answered by {message.reply_type}, not {reply_type}")
        req = next(self._ids)
        future: asyncio.Future[WorkerMessage] = self._loop.create_future()
        self._pending[req] = (future, reply_type)
        wire = encode(message)
        wire["req"] = req
        self._send_map(wire)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reply = await future
        finally:
            self._pending.pop(req, None)
        assert isinstance(reply, reply_type)
        return reply

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("worker channel closed"))
        self._sock.close()

    def _send_map(self, wire: dict[str, Any]) -> None:
        if self.closed:
            return
        self._outbox.append(msgpack.packb(wire))
        self._flush()

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
                self._on_closed()
                return
            self.receive(data)

    def receive(self, data: bytes) -> None:
        """Decode one datagram and hand it to its handler (or its request's waiter)."""
        try:
            wire = msgpack.unpackb(data, strict_map_key=False)
        except ValueError as exc:
            self._refuse(ProtocolError(Reason.UNDECODABLE, "?", f"not msgpack: {exc}"))
            return
        if isinstance(wire, dict) and wire.get("reply") is True:
            self._on_reply(wire)
            return
        try:
            message = decode(wire, self._dispatch.direction)
        except ProtocolError as error:
            self._refuse(error)
            return
        handler = self._dispatch.handlers.get(message.op)
        try:
            if handler is not None:
                handler(message)
            else:
                spawn(self._answer(wire["req"], self._dispatch.requests[message.op](message)))
        except Exception:
            logger.exception("control handler failed op=%s peer=%s", message.op, self.peer)

    def _on_reply(self, wire: dict[str, Any]) -> None:
        pending = self._pending.get(wire.get("req"))  # type: ignore[arg-type]
        try:
            reply = decode(wire, Direction.REPLY)
            if pending is not None and not isinstance(reply, pending[1]):
                raise ProtocolError(Reason.MALFORMED, reply.op,
                                    f"a reply of type {pending[1].op} was expected")
        except ProtocolError as error:
            self._refuse(error)
            if pending is not None and not pending[0].done():
                pending[0].set_exception(error)
            return
        if pending is None:  # the request timed out: nobody waits any more
            logger.debug("late reply dropped op=%s peer=%s", reply.op, self.peer)
        elif not pending[0].done():
            pending[0].set_result(reply)

    async def _answer(self, req: int, work: Awaitable[WorkerMessage]) -> None:
        reply = await work
        wire = encode(reply)
        wire["req"] = req
        wire["reply"] = True
        self._send_map(wire)

    def _refuse(self, error: ProtocolError) -> None:
        self.bad[error.reason.value] += 1
        BAD_MESSAGES.report(error, self.peer)
