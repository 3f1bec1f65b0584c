"""What the RTMP server and the SFU agree on: the publish request, the sink, refusals, limits.

The server knows nothing of rooms or tokens: it hands a ``PublishRequest`` to the publish
handler, which authorizes it and returns a ``StreamSink`` (or raises ``RtmpRefused``); from
then on every audio/video message goes to the sink, synchronously, as it is read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sfu.rtmp.chunks import ChunkLimits

if TYPE_CHECKING:
    from sfu.rtmp.connection import RtmpConnection

# onStatus codes a handler may refuse with
PUBLISH_BAD_NAME = "NetStream.Publish.BadName"
PUBLISH_UNAUTHORIZED = "NetStream.Publish.Unauthorized"

# reasons given to StreamSink.on_end
END_UNPUBLISH = "unpublish"
END_CLOSED = "closed"
END_TIMEOUT = "timeout"
END_ERROR = "error"
END_KICKED = "kicked"


@dataclass(frozen=True)
class RtmpLimits:
    """Every bound the server puts on a client; the defaults are declared here only."""

    handshake_timeout: float = 5.0  # s from TCP accept to a complete handshake
    publish_timeout: float = 10.0  # s from TCP accept to an accepted publish
    idle_timeout: float = 10.0  # s without audio or video once publishing -> on_end("timeout")
    max_chunk_size: int = 1 << 20  # largest Set Chunk Size a client may announce
    max_message_size: int = 8 << 20  # largest message (a video frame) a client may send
    max_command_size: int = 64 << 10  # largest AMF command or data message
    max_chunk_streams: int = 64  # chunk stream ids open at once on one connection
    max_pending_bytes: int = 16 << 20  # unfinished messages of one connection together
    max_amf_depth: int = 16  # nesting of AMF objects and arrays
    max_connections: int = 256  # open connections of the server
    max_unauthenticated_per_ip: int = 16  # connections of one IP not yet publishing
    max_write_buffer: int = 1 << 20  # bytes queued to a client that does not read
    chunk_size: int = 4096  # our own chunk size, announced after connect
    window_ack_size: int = 2_500_000  # the window we ask the client to acknowledge
    peer_bandwidth: int = 2_500_000  # Set Peer Bandwidth we send after connect

    def chunk_limits(self, *, publishing: bool) -> ChunkLimits:
        """The chunk reader's bounds. Until its publish is accepted a client has only commands
        to send, so it may not make us buffer more than a few commands' worth: 256 such
        connections stay within a few dozen MiB."""
        return ChunkLimits(
            max_chunk_size=self.max_chunk_size,
            max_message_size=self.max_message_size if publishing else self.max_command_size,
            max_command_size=self.max_command_size,
            max_chunk_streams=self.max_chunk_streams,
            max_pending_bytes=self.max_pending_bytes if publishing else 2 * self.max_command_size,
        )


@dataclass(frozen=True)
class PublishRequest:
    """A client's ``publish``, with what its ``connect`` said, for the handler to authorize."""

    app: str  # "live" from rtmp://host:port/live/...
    stream: str  # the stream name without its query: "room1" from "room1?token=abc"
    query: dict[str, str]  # query of the stream name, over that of tcUrl and app
    peer: str  # "ip:port" of the client
    tc_url: str
    publish_type: str = "live"  # publish's second argument: "live", "record" or "append"
    connect: dict[str, object] = field(default_factory=dict)  # connect's command object


class RtmpRefused(Exception):
    """Raised by the publish handler to refuse: the client gets onStatus error ``status``
    (e.g. "NetStream.Publish.BadName" or "NetStream.Publish.Unauthorized") with
    ``description``, then the connection is closed."""

    def __init__(self, status: str, description: str) -> None:
        super().__init__(f"{status}: {description}")
        self.status = status
        self.description = description


class StreamSink(Protocol):
    """Where a publish's media goes; every call is synchronous and made as the bytes arrive."""

    def on_metadata(self, metadata: dict[str, object]) -> None:
        """``@setDataFrame``/``onMetaData``: the encoder's description of its stream."""

    def on_video(self, timestamp_ms: int, payload: bytes) -> None:
        """The body of an FLV video tag (message type 9), as received."""

    def on_audio(self, timestamp_ms: int, payload: bytes) -> None:
        """The body of an FLV audio tag (message type 8), as received."""

    def on_end(self, reason: str) -> None:
        """Called exactly once: "unpublish", "closed", "timeout", "error" or "kicked"."""


PublishHandler = Callable[[PublishRequest, "RtmpConnection"], Awaitable[StreamSink]]
"""Authorizes a publish and returns its sink, or raises ``RtmpRefused``.

A ``MediaError`` is refused as NetStream.Publish.BadName with its code and message; any other
exception as NetStream.Publish.BadName "internal error", and logged. If the connection ends
while the handler runs (TCP drop, timeout), the handler is cancelled; once it has returned a
sink, that sink's ``on_end`` is called exactly once.
"""
