"""The server side of the RTMP handshake (C0/C1 -> S0/S1/S2, then C2).

We answer with the plain handshake: S1 is our time and random bytes with a zero version field,
S2 echoes C1. Clients that send the digest-style C1 (ffmpeg, Flash-era encoders: a non-zero
version field and an HMAC in the random part) accept it: they only check the server's digest
when S1 announces a version, which ours does not, and only when they play. A publisher never
needs the digest handshake, so we neither check theirs nor compute ours. C2 is not checked
either: clients disagree on what it must hold, and the chunk stream that follows is what we
validate.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Final

from sfu.rtmp.errors import RtmpProtocolError

RTMP_VERSION: Final = 3
PACKET_SIZE: Final = 1536

_C0C1: Final = 1 + PACKET_SIZE
_C2: Final = PACKET_SIZE


class ServerHandshake:
    """Fed the client's bytes; says what to send back and when the chunk stream begins."""

    __slots__ = ("_buffer", "_epoch", "_replied", "done")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._replied = False
        self._epoch = time.monotonic()
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Take ``data``; return (bytes to send now, chunk-stream bytes that followed C2).

        Raises ``RtmpProtocolError`` for a C0 that is not plain RTMP version 3 (RTMPE's 6, an
        HTTP request, random bytes).
        """
        if self.done:
            raise RtmpProtocolError("handshake already complete")
        self._buffer += data
        reply = b""
        if not self._replied:
            if not self._buffer:
                return b"", b""
            if self._buffer[0] != RTMP_VERSION:
                raise RtmpProtocolError(f"unsupported RTMP version byte {self._buffer[0]}")
            if len(self._buffer) < _C0C1:
                return b"", b""
            c1 = bytes(self._buffer[1:_C0C1])
            del self._buffer[:_C0C1]
            self._replied = True
            reply = self._s0s1s2(c1)
        if len(self._buffer) < _C2:
            return reply, b""
        rest = bytes(self._buffer[_C2:])
        self._buffer.clear()
        self.done = True
        return reply, rest

    def _s0s1s2(self, c1: bytes) -> bytes:
        uptime_ms = int((time.monotonic() - self._epoch) * 1000) & 0xFFFFFFFF
        s1 = struct.pack(">II", uptime_ms, 0) + os.urandom(PACKET_SIZE - 8)
        return bytes((RTMP_VERSION,)) + s1 + c1
