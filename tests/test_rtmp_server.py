"""The RTMP server against real clients on loopback: ffmpeg, GStreamer, and a raw socket
client that speaks the protocol by hand (or breaks it on purpose).

Every server binds port 0; every wait is bounded. After each hostile connection the server
must still take an ffmpeg publish, since one client's garbage may only close that client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from waiting import wait_for

from sfu.errors import PublisherExists
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


# --- ffmpeg ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_ffmpeg_publishes_h264_and_aac_with_metadata() -> None:
    handler = Handler()
    async with rtmp_server(handler) as server:
        code, err = await ffmpeg_publish(server.port, seconds=3)
        assert code == 0, err
        await wait_for(lambda: handler.sinks and handler.sinks[0].ended.is_set(), 5,
                       "the publish to end")
        assert not server.connections

    assert len(handler.sinks) == 1
    sink = handler.sinks[0]
    request = sink.request
    assert (request.app, request.stream, request.query) == ("live", "room1", {"token": "abc"})
    assert request.tc_url == f"rtmp://127.0.0.1:{server.port}/live"
    assert request.peer.startswith("127.0.0.1:")

    kinds = [k for k, _, _ in sink.calls]
    assert kinds[0] == "metadata" and kinds[-1] == "end" and kinds.count("end") == 1
    assert sink.ends[0] in ("unpublish", "closed")
    metadata = sink.calls[0][1]
    assert isinstance(metadata, dict) and metadata["videocodecid"] == 7.0
    assert metadata["audiocodecid"] == 10.0 and metadata["width"] == 320.0

    video = sink.of("video")
    audio = sink.of("audio")
    assert video[0][1][:2] == b"\x17\x00"  # AVC sequence header first
    keyframes = [ts for ts, p in video if p[:2] == b"\x17\x01"]
    assert len(keyframes) >= 3 and keyframes[0] == video[1][0]  # -g 30 over 3 s at 30 fps
    assert sum(1 for _, p in video if p[:2] == b"\x27\x01") >= 60
    assert audio[0][1][:2] == b"\xaf\x00"  # AAC sequence header first
    assert len(audio) > 100 and all(p[:2] == b"\xaf\x01" for _, p in audio[1:])
    for track in (video, audio):
        stamps = [ts for ts, _ in track]
        assert stamps == sorted(stamps)
        assert 2800 <= stamps[-1] - stamps[0] <= 3300


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.slow
async def test_refused_publish_ends_ffmpeg_and_the_next_publish_works() -> None:
    handler = Handler(refuse=RtmpRefused("NetStream.Publish.BadName", "invalid token"))
    async with rtmp_server(handler) as server:
        started = time.monotonic()
        code, err = await ffmpeg_publish(server.port, seconds=3, limit_s=10)
        assert code != 0
        assert time.monotonic() - started < 5.0
        assert "invalid token" in err
        await wait_for(lambda: not server.connections, 2, "no connection left")

        handler.refuse = None
        code, err = await ffmpeg_publish(server.port, seconds=1)
        assert code == 0, err
        assert len(handler.sinks) == 1 and handler.sinks[0].of("video")


async def test_refusal_reaches_the_client_as_on_status_error() -> None:
    handler = Handler(refuse=RtmpRefused("NetStream.Publish.Unauthorized", "no publish grant"))
    async with rtmp_server(handler) as server:
        client = await RawClient.open(server.port)
        status = await client.connect_and_publish()
        assert status[3] == {"level": "error", "code": "NetStream.Publish.Unauthorized",
                             "description": "no publish grant"}
        assert await client.closed_by_server()
        await wait_for(lambda: not server.connections, 2, "no connection left")


@pytest.mark.parametrize(
    ("error", "description"),
    [(RuntimeError("boom"), "internal error"),
     (PublisherExists("the room has an anchor"), "publisher_exists: the room has an anchor")],
)
async def test_handler_errors_are_refusals(error: Exception, description: str) -> None:
    async with rtmp_server(Handler(fail=error)) as server:
        client = await RawClient.open(server.port)
        status = await client.connect_and_publish()
        assert status[3] == {"level": "error", "code": "NetStream.Publish.BadName",
                             "description": description}
        assert await client.closed_by_server()


async def test_play_is_refused() -> None:
    handler = Handler()
    async with rtmp_server(handler) as server:
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"})
        await client.reply("_result")
        client.command("createStream", None)
        await client.reply("_result")
        client.command("play", None, "room1", stream_id=1)
        status = await client.reply("onStatus")
        assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Play.Failed"
        assert status[3]["level"] == "error"
        assert await client.closed_by_server()
        assert not handler.sinks


# --- the raw protocol --------------------------------------------------------------------------


async def test_raw_publish_media_ping_acknowledgement_and_unpublish() -> None:
    handler = Handler()
    async with rtmp_server(handler) as server:
        client = await RawClient.open(server.port)
        status = await client.connect_and_publish("cam?token=t&x=1")
        assert status[3] == {"level": "status", "code": "NetStream.Publish.Start",
                             "description": "cam is now published"}
        sink = handler.sinks[0]
        assert sink.request.query == {"token": "t", "x": "1"}

        client.send(chunks.WINDOW_ACK_SIZE, struct.pack(">I", 5000), csid=2)
        client.send(chunks.DATA_AMF0, amf0.encode("@setDataFrame", "onMetaData",
                                                  amf0.EcmaArray(width=640.0)),
                    csid=4, stream_id=1)
        for i in range(10):
            client.send(chunks.VIDEO, b"\x17\x01" + bytes(1000), csid=6, stream_id=1,
                        timestamp=0x00FFFFF0 + 40 * i)  # crosses into extended timestamps
        client.send(chunks.USER_CONTROL, struct.pack(">HI", 6, 1234), csid=2)
        acked = pong = False
        for _ in range(20):
            msg = await client.message()
            if msg.type_id == chunks.ACKNOWLEDGEMENT:
                acked = struct.unpack(">I", msg.payload)[0] >= 5000
            if msg.type_id == chunks.USER_CONTROL and msg.payload == struct.pack(">HI", 7, 1234):
                pong = True
            if acked and pong:
                break
        assert acked and pong

        client.command("FCUnpublish", None, "cam")
        await asyncio.wait_for(sink.ended.wait(), 5)
        assert sink.calls[0] == ("metadata", {"width": 640.0}, None)
        assert [ts for ts, _ in sink.of("video")] == [0x00FFFFF0 + 40 * i for i in range(10)]
        assert sink.ends == ["unpublish"]
        client.command("deleteStream", None, 1.0)  # after unpublish: nothing more happens
        client.close()
        await wait_for(lambda: not server.connections, 5, "no connection left")
        assert sink.ends == ["unpublish"]


async def test_amf3_command_messages_are_read_as_amf0() -> None:
    handler = Handler()
    async with rtmp_server(handler) as server:
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"}, type_id=chunks.COMMAND_AMF3)
        await client.reply("_result")
        client.command("publish", None, "room9", "live", stream_id=1,
                       type_id=chunks.COMMAND_AMF3)
        status = await client.reply("onStatus")
        assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Publish.Start"
        assert handler.sinks[0].request.stream == "room9"
        client.close()
        await asyncio.wait_for(handler.sinks[0].ended.wait(), 5)
        assert handler.sinks[0].ends == ["closed"]


# --- hostile clients and limits ---------------------------------------------------------------


async def _hostile_random_bytes(port: int) -> RawClient:
    client = await RawClient.open(port)
    client.writer.write(random.Random(5).randbytes(5000))
    return client


async def _hostile_random_after_handshake(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    client.writer.write(b"\x03" + random.Random(6).randbytes(3000))
    return client


async def _hostile_huge_message(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    # The length field has 24 bits: 16 MiB - 1, over the 8 MiB limit, is the most it can say.
    client.writer.write(b"\x06" + bytes(3) + b"\xff\xff\xff\x09" + bytes(4) + bytes(128))
    return client


def _set_chunk_size(size: int) -> Callable[[int], Awaitable[RawClient]]:
    async def hostile(port: int) -> RawClient:
        client = await RawClient.open(port)
        await client.handshake()
        client.send(chunks.SET_CHUNK_SIZE, struct.pack(">I", size), csid=2)
        return client
    return hostile


async def _hostile_silent(port: int) -> RawClient:
    return await RawClient.open(port)


async def _hostile_no_publish(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    client.command("connect", {"app": "live"})
    return client


async def _hostile_media_before_publish(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    client.send(chunks.VIDEO, b"\x17\x01" + bytes(10), csid=6, stream_id=1)
    return client


async def _hostile_deep_amf(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    client.send(chunks.COMMAND_AMF0, amf0.encode("connect", 1.0)
                + b"\x0a\x00\x00\x00\x01" * 1000 + b"\x05")
    return client


@pytest.mark.slow
@pytest.mark.parametrize(
    "attack",
    [_hostile_random_bytes, _hostile_random_after_handshake, _hostile_huge_message,
     _set_chunk_size(0), _set_chunk_size(0x7FFFFFFF), _hostile_silent, _hostile_no_publish,
     _hostile_media_before_publish, _hostile_deep_amf],
    ids=["random-bytes", "random-after-handshake", "16MiB-message", "chunk-size-0",
         "chunk-size-2^31-1", "silent", "no-publish", "media-before-publish", "deep-amf"],
)
async def test_hostile_connection_is_closed_and_the_server_keeps_serving(
        attack: Callable[[int], Awaitable[RawClient]], caplog: pytest.LogCaptureFixture) -> None:
    handler = Handler()
    async with rtmp_server(handler, handshake_timeout=0.5, publish_timeout=1.0) as server:
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="shopcast.sfu.rtmp"):
            client = await attack(server.port)
            assert await client.closed_by_server(limit_s=3.0)
            await wait_for(lambda: not server.connections, 2, "no connection left")
        assert time.monotonic() - started < 2.5
        closes = [r for r in caplog.records if "rtmp connection closed" in r.getMessage()]
        assert len(closes) == 1 and "peer=127.0.0.1:" in closes[0].getMessage()
        assert not handler.sinks
        client.close()

        code, err = await ffmpeg_publish(server.port, seconds=1)
        assert code == 0, err
        assert len(handler.sinks) == 1 and handler.sinks[0].of("video")


async def test_connections_per_ip_and_in_total_are_bounded() -> None:
    handler = Handler()
    async with rtmp_server(handler, max_unauthenticated_per_ip=2, max_connections=3) as server:
        first = await RawClient.open(server.port)
        second = await RawClient.open(server.port)
        third = await RawClient.open(server.port)  # a third one not yet publishing: refused
        assert await third.closed_by_server(limit_s=2)
        assert not await first.closed_by_server(limit_s=0.2)

        status = await first.connect_and_publish()  # publishing frees its place
        assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Publish.Start"
        fourth = await RawClient.open(server.port)
        assert not await fourth.closed_by_server(limit_s=0.2)
        fifth = await RawClient.open(server.port)  # four open would pass the total of 3
        assert await fifth.closed_by_server(limit_s=2)
        assert len(server.connections) == 3
        for client in (first, second, third, fourth, fifth):
            client.close()


async def test_idle_publisher_times_out() -> None:
    handler = Handler()
    async with rtmp_server(handler, idle_timeout=0.4) as server:
        client = await RawClient.open(server.port)
        await client.connect_and_publish()
        for i in range(5):
            client.send(chunks.AUDIO, b"\xaf\x01" + bytes(20), csid=4, stream_id=1,
                        timestamp=21 * i)
            await asyncio.sleep(0.1)
        sink = handler.sinks[0]
        assert not sink.ended.is_set()
        await asyncio.wait_for(sink.ended.wait(), 2)
        assert sink.ends == ["timeout"] and len(sink.of("audio")) == 5
        assert await client.closed_by_server()


async def test_server_close_ends_publishes_as_closed() -> None:
    handler = Handler()
    server = RtmpServer(handler, host="127.0.0.1", port=0)
    await server.start()
    client = await RawClient.open(server.port)
    await client.connect_and_publish()
    await server.close()
    assert handler.sinks[0].ends == ["closed"]
    assert await client.closed_by_server()
    assert not server.connections


# --- kicked by the SFU -------------------------------------------------------------------------


@pytest.mark.slow
async def test_close_from_the_handler_side_ends_a_running_ffmpeg_publish() -> None:
    def kick_after_a_second(sink: Recorder) -> None:
        asyncio.get_running_loop().call_later(1.0, sink.connection.close)

    handler = Handler(on_sink=kick_after_a_second)
    async with rtmp_server(handler) as server:
        started = time.monotonic()
        code, _ = await ffmpeg_publish(server.port, seconds=30, limit_s=15)
        assert code != 0
        assert time.monotonic() - started < 10
        sink = handler.sinks[0]
        assert sink.ends == ["kicked"]
        assert sink.of("video")
        sink.connection.close()  # idempotent
        assert sink.ends == ["kicked"]
        assert not server.connections


# --- GStreamer ---------------------------------------------------------------------------------


def _gstreamer_rtmp2sink() -> str:
    """gst-launch-1.0 with rtmp2sink: fail under CI when missing, skip otherwise."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    launch = shutil.which("gst-launch-1.0")
    inspect = shutil.which("gst-inspect-1.0")
    missing = launch is None or inspect is None
    if not missing:
        assert inspect is not None
        import subprocess

        probe = subprocess.run([inspect, "rtmp2sink"], capture_output=True, timeout=30,
                               check=False)
        missing = probe.returncode != 0
    if missing:
        message = "gst-launch-1.0 with rtmp2sink (gstreamer1.0-plugins-bad) is not installed"
        if ci:
            pytest.fail(message + "; run ./dev setup")
        pytest.skip(message)
    assert launch is not None
    return launch


@pytest.mark.slow
async def test_gstreamer_rtmp2sink_publishes() -> None:
    launch = _gstreamer_rtmp2sink()
    handler = Handler()
    async with rtmp_server(handler) as server:
        url = f"rtmp://127.0.0.1:{server.port}/live/room1?token=abc"
        pipeline = ("videotestsrc num-buffers=90 ! x264enc tune=zerolatency key-int-max=30 ! "
                    f"h264parse ! flvmux streamable=true name=m ! rtmp2sink location={url}")
        proc = await asyncio.create_subprocess_exec(
            launch, "-q", *pipeline.split(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, err.decode(errors="replace")
        await wait_for(lambda: handler.sinks and handler.sinks[0].ended.is_set(), 5,
                       "the publish to end")
    sink = handler.sinks[0]
    assert (sink.request.app, sink.request.stream, sink.request.query) == (
        "live", "room1", {"token": "abc"})
    video = sink.of("video")
    assert video[0][1][:2] == b"\x17\x00"
    assert sum(1 for _, p in video if p[:2] == b"\x17\x01") >= 3
    stamps = [ts for ts, _ in video]
    assert stamps == sorted(stamps) and len(video) >= 90
    assert sink.ends[0] in ("unpublish", "closed")
