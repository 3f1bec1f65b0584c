"""RTMP chunk streams: the streaming demuxer for what a client sends, and the writer for ours.

A message travels as chunks of at most the sender's chunk size, interleaved across chunk
streams; each chunk header (fmt 0-3) repeats only what changed since the previous chunk of
its chunk stream. The reader keeps that per-chunk-stream state, reassembles messages and
accumulates timestamps into absolute milliseconds. It is fed whatever TCP delivered (one
byte or a megabyte) and hands back whole messages one at a time, so the caller can stop
between two messages (while a publish is being authorized) and resume later.

Set Chunk Size and Abort are applied here, as soon as they complete, because they change how
the very next chunk is read; they are also returned so the caller sees them.

Every length read from the wire is checked against ``ChunkLimits`` before any byte of the
message is buffered: a client declaring a 100 MiB message is refused at its first chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sfu.rtmp.errors import RtmpProtocolError

DEFAULT_CHUNK_SIZE: Final = 128
EXTENDED_TIMESTAMP: Final = 0xFFFFFF

# message types
SET_CHUNK_SIZE: Final = 1
ABORT: Final = 2
ACKNOWLEDGEMENT: Final = 3
USER_CONTROL: Final = 4
WINDOW_ACK_SIZE: Final = 5
SET_PEER_BANDWIDTH: Final = 6
AUDIO: Final = 8
VIDEO: Final = 9
DATA_AMF3: Final = 15
SHARED_OBJECT_AMF3: Final = 16
COMMAND_AMF3: Final = 17
DATA_AMF0: Final = 18
SHARED_OBJECT_AMF0: Final = 19
COMMAND_AMF0: Final = 20
AGGREGATE: Final = 22

COMMAND_TYPES: Final = frozenset((DATA_AMF3, SHARED_OBJECT_AMF3, COMMAND_AMF3, DATA_AMF0,
                                  SHARED_OBJECT_AMF0, COMMAND_AMF0))
CONTROL_TYPES: Final = frozenset((SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL,
                                  WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH))

_U32 = struct.Struct(">I")
_U32LE = struct.Struct("<I")
_CONTROL_MAX = 64  # protocol control messages are a few bytes; anything bigger is hostile


@dataclass(frozen=True)
class ChunkLimits:
    """What a reader accepts from a peer; the server fills it from ``RtmpLimits``."""

    max_chunk_size: int = 1 << 20
    max_message_size: int = 8 << 20
    max_command_size: int = 64 << 10
    max_chunk_streams: int = 64
    max_pending_bytes: int = 16 << 20  # partial messages of all chunk streams together


class Message:
    """One reassembled message: type, message stream id, absolute timestamp (ms), payload."""

    __slots__ = ("csid", "payload", "stream_id", "timestamp", "type_id")

    def __init__(self, csid: int, type_id: int, stream_id: int, timestamp: int,
                 payload: bytes) -> None:
        self.csid = csid
        self.type_id = type_id
        self.stream_id = stream_id
        self.timestamp = timestamp
        self.payload = payload

    def __repr__(self) -> str:
        return (f"Message(csid={self.csid}, type={self.type_id}, stream={self.stream_id}, "
                f"ts={self.timestamp}, {len(self.payload)} bytes)")


class _ChunkStream:
    """The header state of one chunk stream, and the message it is assembling."""

    __slots__ = ("extended", "length", "parts", "received", "stream_id", "timestamp",
                 "ts_field", "type_id")

    def __init__(self) -> None:
        self.timestamp = 0  # absolute ms of the current (or last) message
        self.ts_field = 0  # last timestamp field: absolute after fmt 0, a delta after fmt 1/2
        self.extended = False  # the last header used the extended timestamp
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.parts: list[bytes] = []
        self.received = 0  # bytes of the current message so far; 0 = between messages


class ChunkReader:
    """Streaming demuxer of a client's chunk stream: ``feed`` bytes, then ``next_message``."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.limits = limits or ChunkLimits()
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buf = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._pending = 0
        self._need = 0  # bytes the chunk under way needs in all; known once its header is in

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed into a chunk."""
        return len(self._buf) - self._pos

    def next_message(self) -> Message | None:
        """The next complete message, or None when more bytes are needed.

        Raises ``RtmpProtocolError`` on anything malformed or over a limit; the reader is not
        usable afterwards.
        """
        if len(self._buf) - self._pos < self._need:
            return None  # the chunk whose header we read is still incomplete
        while True:
            message = self._next_chunk()
            if message is None or message is not _PARTIAL:
                return message

    def _next_chunk(self) -> Message | None:
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < 1:
            return None
        first = buf[pos]
        fmt = first >> 6
        csid = first & 0x3F
        head = 1
        if csid == 0:
            if avail < 2:
                return None
            csid = 64 + buf[pos + 1]
            head = 2
        elif csid == 1:
            if avail < 3:
                return None
            csid = 64 + buf[pos + 1] + (buf[pos + 2] << 8)
            head = 3
        header_len = head + (11, 7, 3, 0)[fmt]
        if avail < header_len:
            return None
        stream = self._streams.get(csid)
        if stream is None:
            if fmt >= 2:
                raise RtmpProtocolError(f"chunk stream {csid} starts with a fmt {fmt} header")
            if len(self._streams) >= self.limits.max_chunk_streams:
                raise RtmpProtocolError(
                    f"more than {self.limits.max_chunk_streams} chunk streams")
            stream = _ChunkStream()
            self._streams[csid] = stream
        if fmt != 3 and stream.received:
            raise RtmpProtocolError(f"chunk stream {csid}: new header inside a message")
        p = pos + head
        ts_field = stream.ts_field
        if fmt <= 2:
            ts_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
        extended = ts_field >= EXTENDED_TIMESTAMP if fmt <= 2 else stream.extended
        if extended:
            header_len += 4
            if avail < header_len:
                return None
            if fmt <= 2:
                ts_field = _U32.unpack_from(buf, pos + header_len - 4)[0]
        if fmt <= 1:
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
            self._check_length(type_id, length)
        else:
            length = stream.length
        # Only a chunk whose payload has arrived too is consumed, so that a header read twice
        # (more bytes needed) never adds its timestamp delta twice.
        want = min(self.chunk_size, length - stream.received)
        if avail < header_len + want:
            self._need = header_len + want
            return None
        self._need = 0
        if fmt <= 1:
            stream.length = length
            stream.type_id = type_id
            if fmt == 0:
                stream.stream_id = _U32LE.unpack_from(buf, p + 7)[0]
        if fmt <= 2:
            stream.extended = extended
            stream.ts_field = ts_field
        if not stream.received:
            # The first chunk of a message: fmt 0 carries the absolute time, 1-3 a delta
            # (fmt 3 repeats the last field, which after a fmt 0 is that absolute time).
            stream.timestamp = ts_field if fmt == 0 else stream.timestamp + ts_field
        start = pos + header_len
        self._pos = start + want
        if stream.received == 0 and want == stream.length:
            return self._complete(csid, stream, bytes(buf[start:start + want]))
        if want:
            stream.parts.append(bytes(buf[start:start + want]))
        stream.received += want
        self._pending += want
        if self._pending > self.limits.max_pending_bytes:
            raise RtmpProtocolError("too many bytes of unfinished messages")
        if stream.received < stream.length:
            return _PARTIAL
        payload = b"".join(stream.parts)
        self._pending -= stream.received
        stream.parts = []
        stream.received = 0
        return self._complete(csid, stream, payload)

    def _check_length(self, type_id: int, length: int) -> None:
        limits = self.limits
        if length > limits.max_message_size:
            raise RtmpProtocolError(f"message of {length} bytes over the limit")
        if type_id in COMMAND_TYPES and length > limits.max_command_size:
            raise RtmpProtocolError(f"command of {length} bytes over the limit")
        if type_id in CONTROL_TYPES and length > _CONTROL_MAX:
            raise RtmpProtocolError(f"control message of {length} bytes")

    def _complete(self, csid: int, stream: _ChunkStream, payload: bytes) -> Message:
        message = Message(csid, stream.type_id, stream.stream_id, stream.timestamp, payload)
        if stream.type_id == SET_CHUNK_SIZE:
            self._set_chunk_size(payload)
        elif stream.type_id == ABORT:
            self._abort(payload)
        return message

    def _set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpProtocolError("short Set Chunk Size")
        size: int = _U32.unpack_from(payload)[0]
        if size == 0 or size & 0x80000000:
            raise RtmpProtocolError(f"invalid chunk size {size}")
        if size > self.limits.max_chunk_size:
            raise RtmpProtocolError(f"chunk size {size} over the limit")
        self.chunk_size = size

    def _abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise RtmpProtocolError("short Abort")
        stream = self._streams.get(_U32.unpack_from(payload)[0])
        if stream is not None and stream.received:
            self._pending -= stream.received
            stream.parts = []
            stream.received = 0


_PARTIAL: Final = Message(0, 0, 0, 0, b"")  # a chunk was consumed, the message is unfinished


# --- writing ---------------------------------------------------------------------------------


def _basic_header(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= 65599:
        return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))
    raise ValueError(f"chunk stream id {csid} out of range")


def encode_message(csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes,
                   chunk_size: int) -> bytes:
    """``payload`` as chunks: a fmt 0 header, then fmt 3 continuations every ``chunk_size``.

    The server's messages are rare (replies, acknowledgements), so it always writes fmt 0.
    """
    timestamp &= 0xFFFFFFFF
    extended = timestamp >= EXTENDED_TIMESTAMP
    ts_field = EXTENDED_TIMESTAMP if extended else timestamp
    ext = _U32.pack(timestamp) if extended else b""
    length = len(payload)
    out = bytearray(_basic_header(0, csid))
    out += ts_field.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes((type_id,))
    out += _U32LE.pack(stream_id) + ext
    out += payload[:chunk_size]
    continuation = _basic_header(3, csid) + ext
    for offset in range(chunk_size, length, chunk_size):
        out += continuation
        out += payload[offset:offset + chunk_size]
    return bytes(out)
