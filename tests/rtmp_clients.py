"""RTMP test clients: a recording publish handler, a server on a free port, the ffmpeg
publish the brief names, and a raw client that speaks the protocol by hand (or breaks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sfu.rtmp import amf0, chunks
from sfu.rtmp.handshake import PACKET_SIZE
from sfu.rtmp.server import (
    PublishRequest,
    RtmpConnection,
    RtmpLimits,
    RtmpRefused,
    RtmpServer,
    StreamSink,
)

FFMPEG_PUBLISH = (
    "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=320x240:rate=30 "
    "-f lavfi -i sine=frequency=440:sample_rate=48000 -t {seconds} -c:v libx264 -profile:v high "
    "-bf 0 -g 30 -pix_fmt yuv420p -c:a aac -f flv"
).split()


# --- a recording handler ---------------------------------------------------------------------


@dataclass
class Recorder:
    """A StreamSink that keeps every call, in order."""

    request: PublishRequest
    connection: RtmpConnection
    calls: list[tuple[str, object, object]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def on_metadata(self, metadata: dict[str, object]) -> None:
        self.calls.append(("metadata", metadata, None))

    def on_video(self, timestamp_ms: int, payload: bytes) -> None:
        self.calls.append(("video", timestamp_ms, payload))

    def on_audio(self, timestamp_ms: int, payload: bytes) -> None:
        self.calls.append(("audio", timestamp_ms, payload))

    def on_end(self, reason: str) -> None:
        self.calls.append(("end", reason, None))
        self.ended.set()

    def of(self, kind: str) -> list[tuple[int, bytes]]:
        return [(int(str(a)), b) for k, a, b in self.calls if k == kind
                and isinstance(b, bytes)]

    @property
    def ends(self) -> list[object]:
        return [a for k, a, _ in self.calls if k == "end"]


@dataclass
class Handler:
    """Records publishes; ``refuse`` or ``fail`` make it refuse the next ones."""

    sinks: list[Recorder] = field(default_factory=list)
    refuse: RtmpRefused | None = None
    fail: Exception | None = None
    on_sink: Callable[[Recorder], None] | None = None
    published: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: PublishRequest, connection: RtmpConnection) -> StreamSink:
        if self.refuse is not None:
            raise self.refuse
        if self.fail is not None:
            raise self.fail
        sink = Recorder(request, connection)
        self.sinks.append(sink)
        if self.on_sink is not None:
            self.on_sink(sink)
        self.published.set()
        return sink


@contextlib.asynccontextmanager
async def rtmp_server(handler: Handler, **limits: float) -> AsyncIterator[RtmpServer]:
    server = RtmpServer(handler, host="127.0.0.1", port=0, limits=RtmpLimits(**limits))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def ffmpeg_publish(port: int, seconds: float = 3, stream: str = "room1?token=abc",
                         limit_s: float = 30.0) -> tuple[int, str]:
    """Run the ffmpeg publish to ``stream``; (exit code, stderr)."""
    args = [a.format(seconds=seconds) for a in FFMPEG_PUBLISH]
    proc = await asyncio.create_subprocess_exec(
        *args, f"rtmp://127.0.0.1:{port}/live/{stream}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"ffmpeg still running after {limit_s}s") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


# --- a raw client ----------------------------------------------------------------------------


class RawClient:
    """A hand-driven RTMP client: handshake, commands, and whatever bytes a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.chunks = chunks.ChunkReader(chunks.ChunkLimits(max_chunk_size=1 << 20))
        self.txn = 0.0

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def handshake(self) -> None:
        c1 = bytes(8) + os.urandom(PACKET_SIZE - 8)
        self.writer.write(b"\x03" + c1)
        s0s1s2 = await asyncio.wait_for(self.reader.readexactly(1 + 2 * PACKET_SIZE), 5)
        assert s0s1s2[0] == 3 and s0s1s2[1 + PACKET_SIZE:] == c1
        self.writer.write(s0s1s2[1:1 + PACKET_SIZE])

    def send(self, type_id: int, payload: bytes, *, csid: int = 3, stream_id: int = 0,
             timestamp: int = 0) -> None:
        self.writer.write(chunks.encode_message(csid, type_id, stream_id, timestamp, payload,
                                                chunks.DEFAULT_CHUNK_SIZE))

    def command(self, name: str, *args: object, stream_id: int = 0,
                type_id: int = chunks.COMMAND_AMF0) -> None:
        self.txn += 1
        body = amf0.encode(name, self.txn, *args)
        if type_id == chunks.COMMAND_AMF3:
            body = b"\x00" + body
        self.send(type_id, body, csid=8 if stream_id else 3, stream_id=stream_id)

    async def message(self, limit_s: float = 5.0) -> chunks.Message:
        deadline = time.monotonic() + limit_s
        while (found := self.chunks.next_message()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no message from the server in time")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            if not data:
                raise ConnectionError("server closed the connection")
            self.chunks.feed(data)
        return found

    async def reply(self, name: str, limit_s: float = 5.0) -> list[object]:
        """Values of the next command called ``name``, skipping everything else."""
        deadline = time.monotonic() + limit_s
        while True:
            msg = await self.message(max(deadline - time.monotonic(), 0.01))
            if msg.type_id == chunks.COMMAND_AMF0:
                values = amf0.decode(msg.payload)
                if values and values[0] == name:
                    return values

    async def connect_and_publish(self, stream: str = "room1?token=abc") -> list[object]:
        """connect, createStream, publish; the onStatus that answers the publish."""
        await self.handshake()
        self.command("connect", {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
        assert (await self.reply("_result"))[3] == {
            "level": "status", "code": "NetConnection.Connect.Success",
            "description": "Connection succeeded.", "objectEncoding": 0.0}
        self.command("createStream", None)
        assert (await self.reply("_result"))[3] == 1.0
        self.command("publish", None, stream, "live", stream_id=1)
        return await self.reply("onStatus")

    async def closed_by_server(self, limit_s: float = 5.0) -> bool:
        """True once the server has closed the connection (EOF or reset) within ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(self.reader.read(65536),
                                              max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            if not data:
                return True
        return False

    def close(self) -> None:
        self.writer.close()
