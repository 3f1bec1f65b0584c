"""Hostile RTMP clients and the server's limits: each bad connection is closed with one log
line, and the server still takes an ffmpeg publish right after it.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Awaitable, Callable

import pytest
from rtmp_clients import Handler, RawClient, ffmpeg_publish, rtmp_server
from waiting import wait_for

from sfu.rtmp import amf0, chunks
from sfu.rtmp.server import PublishRequest, RtmpConnection, RtmpServer, StreamSink

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


async def _hostile_big_message_before_publish(port: int) -> RawClient:
    client = await RawClient.open(port)
    await client.handshake()
    # 1 MiB is a fine video frame, but before a publish only commands (64 KiB) may come.
    client.writer.write(b"\x06" + bytes(3) + (1 << 20).to_bytes(3, "big") + b"\x09"
                        + bytes(4) + bytes(128))
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
     _hostile_media_before_publish, _hostile_deep_amf, _hostile_big_message_before_publish],
    ids=["random-bytes", "random-after-handshake", "16MiB-message", "chunk-size-0",
         "chunk-size-2^31-1", "silent", "no-publish", "media-before-publish", "deep-amf",
         "1MiB-before-publish"],
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


async def test_publish_deadline_counts_from_the_tcp_accept() -> None:
    handler = Handler()
    async with rtmp_server(handler, handshake_timeout=5.0, publish_timeout=0.6) as server:
        started = time.monotonic()
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"})
        await client.reply("_result")
        assert await client.closed_by_server(limit_s=3.0)
        assert 0.5 <= time.monotonic() - started < 1.5
        client.close()


async def test_what_a_client_sends_while_its_publish_is_authorized_waits_for_the_answer() -> None:
    """Media sent right behind ``publish`` (more than is held before reading pauses) reaches
    the sink once the handler has answered, all of it and in order."""
    handler = Handler()
    inner = handler.__call__

    async def slow(request: PublishRequest, connection: RtmpConnection) -> StreamSink:
        await asyncio.sleep(0.3)
        return await inner(request, connection)

    server = RtmpServer(slow, host="127.0.0.1", port=0)
    await server.start()
    try:
        client = await RawClient.open(server.port)
        await client.handshake()
        client.command("connect", {"app": "live"})
        await client.reply("_result")
        client.command("publish", None, "room1", "live", stream_id=1)
        for i in range(100):  # 100 x 5 KB: past the 256 KiB held before reading pauses
            client.send(chunks.VIDEO, b"\x27\x01" + bytes(5000), csid=6, stream_id=1,
                        timestamp=33 * i)
        status = await client.reply("onStatus")
        assert isinstance(status[3], dict) and status[3]["code"] == "NetStream.Publish.Start"
        await wait_for(lambda: handler.sinks and len(handler.sinks[0].of("video")) == 100, 5,
                       "every video message")
        assert [ts for ts, _ in handler.sinks[0].of("video")] == [33 * i for i in range(100)]
        client.close()
    finally:
        await server.close()
