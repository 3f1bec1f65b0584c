"""The RTMP server against real clients on loopback: ffmpeg, GStreamer's rtmp2sink, and a raw
client for what those never send (AMF3 commands, pings, acknowledgement windows, play).

Every server binds port 0; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
import time

import pytest
from rtmp_clients import Handler, RawClient, Recorder, ffmpeg_publish, rtmp_server
from waiting import wait_for

from sfu.errors import PublisherExists
from sfu.rtmp import amf0, chunks
from sfu.rtmp.server import (
    PublishRequest,
    RtmpConnection,
    RtmpRefused,
    RtmpServer,
    StreamSink,
)

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


async def test_a_client_gone_while_the_handler_runs_cancels_the_handler() -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_handler(request: PublishRequest, connection: RtmpConnection) -> StreamSink:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("the handler outlived its connection")

    server = RtmpServer(slow_handler, host="127.0.0.1", port=0)
    await server.start()
    try:
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"})
        await client.reply("_result")
        client.command("publish", None, "room1", "live", stream_id=1)
        await asyncio.wait_for(entered.wait(), 5)
        client.close()
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_for(lambda: not server.connections, 2, "no connection left")
    finally:
        await server.close()


async def test_a_handler_that_closes_its_connection_still_gets_on_end_once() -> None:
    sinks: list[Recorder] = []

    async def closing_handler(request: PublishRequest, connection: RtmpConnection
                              ) -> StreamSink:
        sink = Recorder(request, connection)
        sinks.append(sink)
        connection.close("kicked")
        return sink

    server = RtmpServer(closing_handler, host="127.0.0.1", port=0)
    await server.start()
    try:
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"})
        await client.reply("_result")
        client.command("publish", None, "room1", "live", stream_id=1)
        assert await client.closed_by_server()
        await wait_for(lambda: sinks and sinks[0].ended.is_set(), 5, "on_end")
        assert sinks[0].ends == ["kicked"]
        assert not server.connections
    finally:
        await server.close()
    assert sinks[0].ends == ["kicked"]


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
