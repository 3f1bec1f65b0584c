"""One RTMP client connection: handshake, commands, and the publish's media to its sink.

An ``asyncio.Protocol``: ``data_received`` runs the handshake, then feeds the chunk reader and
handles each whole message at once; media goes to the sink synchronously, with no task or
await per message. The only task is the publish handler's, once per connection; while it runs,
messages wait unread in the reader (reading pauses only if a client sends a lot meanwhile).

Every way a connection ends goes through ``close(reason)``: the sink hears ``on_end`` once,
timers are cancelled, the server forgets the connection. A protocol violation, a limit or a
timeout adds one log line on "shopcast.sfu.rtmp" with the peer and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from enum import Enum
from typing import TYPE_CHECKING, cast

from sfu.errors import MediaError
from sfu.rtmp import amf0, chunks, messages
from sfu.rtmp.contract import (
    END_CLOSED,
    END_ERROR,
    END_KICKED,
    END_TIMEOUT,
    END_UNPUBLISH,
    PUBLISH_BAD_NAME,
    PublishRequest,
    RtmpRefused,
    StreamSink,
)
from sfu.rtmp.errors import RtmpProtocolError
from sfu.rtmp.handshake import ServerHandshake
from sfu.rtmp.incoming import dispatch_aggregate, metadata_of

if TYPE_CHECKING:
    from sfu.rtmp.server import RtmpServer

logger = logging.getLogger("shopcast.sfu.rtmp")

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class State(Enum):
    HANDSHAKE = "handshake"
    CONNECTING = "connecting"  # handshake done, waiting for connect
    CONNECTED = "connected"  # connect answered, waiting for publish
    AUTHORIZING = "authorizing"  # the publish handler runs
    PUBLISHING = "publishing"
    UNPUBLISHED = "unpublished"  # the client ended its publish; waiting for it to hang up
    CLOSED = "closed"


def _peer_name(transport: asyncio.BaseTransport) -> tuple[str, str]:
    address = transport.get_extra_info("peername")
    if not isinstance(address, tuple) or len(address) < 2:
        return "unknown", "unknown"
    host = str(address[0])
    return host, (f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}")


class RtmpConnection(asyncio.Protocol):
    """One TCP connection; what the publish handler gets so the SFU can end it later."""

    def __init__(self, server: RtmpServer) -> None:
        self._server = server
        self._limits = server.limits
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.ip = "unknown"
        self.state = State.HANDSHAKE
        self._handshake = ServerHandshake()
        self._reader = chunks.ChunkReader(self._limits.chunk_limits(publishing=False))
        self._sink: StreamSink | None = None
        self._connect: dict[str, object] = {}
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._received = 0  # bytes, for acknowledgements
        self._acked = 0
        self._ack_window = 0  # the client's Window Acknowledgement Size; 0 = none announced
        self._media_count = 0
        self._idle_seen = 0
        self._idle_since = 0.0
        self._end_reason = ""
        self._accepted_at = 0.0
        self._paused = False
        self._held_max = 4 * self._limits.max_command_size  # bytes read while authorizing

    # --- public -------------------------------------------------------------------------------

    def close(self, reason: str = END_KICKED) -> None:
        """End the connection now (sync, idempotent); a publishing sink gets on_end(reason)."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._end_reason = reason
        for timer in (self._deadline, self._idle):
            if timer is not None:
                timer.cancel()
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        sink, self._sink = self._sink, None
        self._server._forget(self)
        if self._transport is not None:
            self._transport.close()
        if sink is not None:
            try:
                sink.on_end(reason)
            except Exception:
                logger.exception("rtmp sink on_end failed peer=%s", self.peer)

    @property
    def publishing(self) -> bool:
        return self.state is State.PUBLISHING

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's (what `shopcast serve` runs) does not subclass asyncio's.
        self._transport = cast(asyncio.Transport, transport)
        self.ip, self.peer = _peer_name(transport)
        refusal = self._server._admit(self)
        if refusal is not None:
            self._log_close(refusal)
            self.state = State.CLOSED
            self._transport.abort()
            return
        self._accepted_at = self._loop.time()
        self._deadline = self._loop.call_later(
            self._limits.handshake_timeout, self._timeout, "handshake timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(END_CLOSED)

    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._received += len(data)
        try:
            if self.state is State.HANDSHAKE:
                reply, data = self._handshake.feed(data)
                if reply:
                    self._send(reply)
                if not self._handshake.done:
                    return
                self._handshake_done()
            self._reader.feed(data)
            self._drain()
            if self.state is State.AUTHORIZING and self._reader.buffered > self._held_max:
                # A client should wait for its publish's answer; one that keeps sending is
                # held here (reading stays on otherwise, so that a hang-up is seen at once).
                self._paused = True
                if self._transport is not None:
                    self._transport.pause_reading()
        except RtmpProtocolError as exc:
            self._fail(str(exc), "protocol_error")
        except Exception:
            logger.exception("rtmp connection failed peer=%s", self.peer)
            self._fail("internal error", None)

    # --- reading -------------------------------------------------------------------------------

    def _handshake_done(self) -> None:
        self.state = State.CONNECTING
        if self._deadline is not None:
            self._deadline.cancel()
        # The publish deadline counts from the TCP accept, the handshake included.
        self._deadline = self._loop.call_at(self._accepted_at + self._limits.publish_timeout,
                                            self._timeout, "no publish in time")

    def _drain(self) -> None:
        """Handle every complete message, until the buffer runs dry or a publish is pending."""
        reader = self._reader
        while self.state is not State.AUTHORIZING and self.state is not State.CLOSED:
            message = reader.next_message()
            if message is None:
                break
            type_id = message.type_id
            if type_id == chunks.VIDEO or type_id == chunks.AUDIO:
                self._media(message)
            else:
                self._other(message)
        if self._ack_window and self._received - self._acked >= self._ack_window:
            self._acked = self._received
            self._send(messages.acknowledgement(self._received))

    def _media(self, message: chunks.Message) -> None:
        sink = self._sink
        if sink is None:
            if self.state is State.UNPUBLISHED:
                return  # the tail of a stream its client just unpublished
            raise RtmpProtocolError("media before publish")
        self._media_count += 1
        if message.type_id == chunks.VIDEO:
            sink.on_video(message.timestamp, message.payload)
        else:
            sink.on_audio(message.timestamp, message.payload)

    def _other(self, message: chunks.Message) -> None:
        type_id = message.type_id
        payload = message.payload
        if type_id == chunks.COMMAND_AMF0 or type_id == chunks.COMMAND_AMF3:
            if type_id == chunks.COMMAND_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]
            self._command(amf0.decode(payload, max_depth=self._limits.max_amf_depth), message)
        elif type_id == chunks.DATA_AMF0 or type_id == chunks.DATA_AMF3:
            if type_id == chunks.DATA_AMF3 and payload[:1] == b"\x00":
                payload = payload[1:]
            self._data(payload)
        elif type_id == chunks.AGGREGATE:
            if self._sink is not None:
                self._media_count += 1
                dispatch_aggregate(message, self._sink, self._data)
            elif self.state is not State.UNPUBLISHED:
                raise RtmpProtocolError("media before publish")
        elif type_id == chunks.USER_CONTROL:
            if len(payload) < 2:
                raise RtmpProtocolError("short user control message")
            if _U16.unpack_from(payload)[0] == messages.PING_REQUEST and len(payload) >= 6:
                self._send(messages.user_control(messages.PING_RESPONSE,
                                                 _U32.unpack_from(payload, 2)[0]))
        elif type_id == chunks.WINDOW_ACK_SIZE:
            if len(payload) < 4:
                raise RtmpProtocolError("short Window Acknowledgement Size")
            self._ack_window = _U32.unpack_from(payload)[0]
        # Set Chunk Size and Abort were applied by the reader; acknowledgements, peer
        # bandwidth and shared objects need nothing from a server that only receives.

    def _data(self, payload: bytes) -> None:
        if self._sink is None:
            return  # metadata outside a publish describes nothing we keep
        metadata = metadata_of(amf0.decode(payload, max_depth=self._limits.max_amf_depth))
        if metadata is not None:
            self._sink.on_metadata(metadata)

    # --- commands ------------------------------------------------------------------------------

    def _command(self, values: list[object], message: chunks.Message) -> None:
        if not values or not isinstance(values[0], str):
            raise RtmpProtocolError("command without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        if name == "connect":
            self._on_connect(values, txn)
            return
        if self.state is State.CONNECTING:
            raise RtmpProtocolError(f"{name} before connect")
        size = self._limits.chunk_size
        if name == "createStream":
            self._send(messages.command(size, "_result", txn, None,
                                        float(messages.PUBLISH_STREAM_ID)))
        elif name == "releaseStream":
            self._send(messages.command(size, "_result", txn, None, amf0.UNDEFINED))
        elif name == "FCPublish":
            stream = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
            self._send(messages.command(size, "onFCPublish", 0.0, None,
                                        {"code": "NetStream.Publish.Start",
                                         "description": stream}))
            self._send(messages.command(size, "_result", txn, None, amf0.UNDEFINED))
        elif name == "publish":
            self._on_publish(values, message.stream_id)
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            self._on_unpublish(name)
        elif name in ("play", "play2"):
            self._send(messages.status(size, "error", "NetStream.Play.Failed",
                                       "this server takes publishes only",
                                       stream_id=message.stream_id or messages.PUBLISH_STREAM_ID))
            self._refused("play refused", "play_refused")
        # Anything else (_checkbw, getStreamLength, a client's _result...) needs no answer.

    def _on_connect(self, values: list[object], txn: float) -> None:
        if self.state is not State.CONNECTING:
            raise RtmpProtocolError("connect on a connected connection")
        obj = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
        self._connect = dict(obj)
        limits = self._limits
        self._send(messages.window_ack_size(limits.window_ack_size)
                   + messages.set_peer_bandwidth(limits.peer_bandwidth)
                   + messages.set_chunk_size(limits.chunk_size)
                   + messages.connect_result(limits.chunk_size, txn))
        self.state = State.CONNECTED

    def _on_publish(self, values: list[object], stream_id: int) -> None:
        size = self._limits.chunk_size
        if self.state is not State.CONNECTED:
            self._send(messages.status(size, "error", PUBLISH_BAD_NAME, "already publishing"))
            self._refused("second publish", "second_publish")
            return
        raw_name = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
        kind = values[4] if len(values) > 4 and isinstance(values[4], str) else "live"

        def text(key: str) -> str:
            value = self._connect.get(key)
            return value if isinstance(value, str) else ""

        app, stream, query = messages.names(text("app"), text("tcUrl"), raw_name)
        if not stream:
            self._send(messages.status(size, "error", PUBLISH_BAD_NAME, "empty stream name"))
            self._refused("empty stream name", "empty_stream_name")
            return
        request = PublishRequest(app=app, stream=stream, query=query, peer=self.peer,
                                 tc_url=text("tcUrl"), publish_type=kind,
                                 connect=self._connect)
        self.state = State.AUTHORIZING
        self._task = self._loop.create_task(self._authorize(request, stream_id))

    async def _authorize(self, request: PublishRequest, stream_id: int) -> None:
        size = self._limits.chunk_size
        stream_id = stream_id or messages.PUBLISH_STREAM_ID
        try:
            sink = await self._server.handler(request, self)
        except RtmpRefused as refusal:
            self._refuse(refusal.status, refusal.description, stream_id)
            return
        except MediaError as exc:
            self._refuse(PUBLISH_BAD_NAME, f"{exc.code}: {exc.message}", stream_id)
            return
        except Exception:
            logger.exception("rtmp publish handler failed peer=%s", self.peer)
            self._refuse(PUBLISH_BAD_NAME, "internal error", stream_id)
            return
        if self.state is State.CLOSED:  # closed while the handler ran (by the handler itself)
            sink.on_end(self._end_reason)
            return
        self._sink = sink
        self.state = State.PUBLISHING
        self._reader.limits = self._limits.chunk_limits(publishing=True)
        self._server._promote(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        logger.info("rtmp publish peer=%s app=%s stream=%s", self.peer, request.app,
                    request.stream)
        self._idle_since = self._loop.time()
        self._idle = self._loop.call_later(self._idle_tick(), self._check_idle)
        self._send(messages.user_control(messages.STREAM_BEGIN, stream_id)
                   + messages.status(size, "status", "NetStream.Publish.Start",
                                     f"{request.stream} is now published", stream_id))
        if self._paused and self._transport is not None and self.state is State.PUBLISHING:
            self._paused = False
            self._transport.resume_reading()
        try:
            self._drain()  # what arrived while the handler ran
        except RtmpProtocolError as exc:
            self._fail(str(exc), "protocol_error")
        except Exception:
            logger.exception("rtmp connection failed peer=%s", self.peer)
            self._fail("internal error", None)

    def _refuse(self, code: str, description: str, stream_id: int) -> None:
        if self.state is State.CLOSED:
            return
        self._send(messages.status(self._limits.chunk_size, "error", code, description,
                                   stream_id))
        self._refused(f"{code} {description}", None)  # the door counted it

    def _on_unpublish(self, command: str) -> None:
        if self.state is State.AUTHORIZING:
            self.close(END_UNPUBLISH)
            return
        sink, self._sink = self._sink, None
        if sink is None:
            return
        self.state = State.UNPUBLISHED
        if self._idle is not None:
            self._idle.cancel()
        # The client hangs up next; if it does not, it is gone after the publish timeout.
        self._deadline = self._loop.call_later(self._limits.publish_timeout, self.close,
                                               END_CLOSED)
        logger.info("rtmp unpublish peer=%s by=%s", self.peer, command)
        sink.on_end(END_UNPUBLISH)

    # --- ends ----------------------------------------------------------------------------------

    def _idle_tick(self) -> float:
        return max(self._limits.idle_timeout / 4, 0.01)

    def _check_idle(self) -> None:
        if self.state is not State.PUBLISHING:
            return
        now = self._loop.time()
        if self._media_count != self._idle_seen:
            self._idle_seen = self._media_count
            self._idle_since = now
        elif now - self._idle_since >= self._limits.idle_timeout:
            self._log_close("no media in time")
            self.close(END_TIMEOUT)
            return
        self._idle = self._loop.call_later(self._idle_tick(), self._check_idle)

    def _timeout(self, what: str) -> None:
        self._log_close(what)
        if self.state is State.HANDSHAKE:
            self._server.refused["handshake_timeout"] += 1
        elif self.state in (State.CONNECTING, State.CONNECTED, State.AUTHORIZING):
            self._server.refused["publish_timeout"] += 1
        self.close(END_TIMEOUT)

    def _fail(self, reason: str, code: str | None) -> None:
        """Close for ``reason``; ``code``: the refusal it is counted as (None: not one)."""
        self._log_close(reason)
        if code is not None:
            self._server.refused[code] += 1
        self.close(END_ERROR)

    def _refused(self, reason: str, code: str | None) -> None:
        logger.info("rtmp refused peer=%s reason=%s", self.peer, reason)
        if code is not None:
            self._server.refused[code] += 1
        self.close(END_CLOSED)

    def _log_close(self, reason: str) -> None:
        logger.warning("rtmp connection closed peer=%s state=%s reason=%s", self.peer,
                       self.state.value, reason)

    def _send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or self.state is State.CLOSED:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._limits.max_write_buffer:
            self._fail("client does not read what we send", "not_reading")
