"""HTTP-FLV end to end: a real aiortc anchor over WHIP, readers over HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest
from flv_helpers import ffprobe, start_anchor
from waiting import wait_for

from loadtest.flv_probe import FlvClient
from sfu.flv.manager import FLV_KEY
from sfu.node import NODE_KEY
from sfu.room import Room
from shopcast.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture
def config(config: Config) -> Config:
    config.flv_keyframe_interval_ms = 1000
    config.flv_stuck_timeout_ms = 3000
    return config




def flv_url(server: Any, room: str) -> str:
    return str(server.flv_url(room, "v"))


def bearer(token: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


async def test_status_codes(server: Any) -> None:
    async with aiohttp.ClientSession() as s:
        async def get(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
            async with s.get(url, **kw) as r:
                return r.status, await r.json()

        status, body = await get(f"{server.url}/live/r1.flv")
        assert status == 401 and body["error"]["code"] == "missing_token"
        status, _ = await get(f"{server.url}/live/r1.flv", **bearer("garbage"))
        assert status == 401
        status, _ = await get(f"{server.url}/live/r1.flv",
                              **bearer(server.token("other", "v", "subscribe")))
        assert status == 403
        status, _ = await get(f"{server.url}/live/r1.flv",
                              **bearer(server.token("r1", "v", "chat")))
        assert status == 403
        status, body = await get(flv_url(server, "r1"))
        assert status == 404 and body["error"]["code"] == "not_found"
        server.app[NODE_KEY].rooms["r1"] = Room("r1")  # exists (say, a viewer), nobody live
        status, body = await get(flv_url(server, "r1"))
        assert status == 503 and body["error"]["code"] == "not_live"
        token = server.token("r1", "v", "subscribe")
        status, body = await get(f"{server.url}/live/r1.flv",
                                 headers={"Authorization": f"Bearer {token}"})
        assert status == 503


async def test_stream_is_h264_aac_and_late_joiner_starts_at_once(server: Any) -> None:
    anchor = await start_anchor(server, "flv1")
    try:
        probe = await asyncio.to_thread(ffprobe, flv_url(server, "flv1"))
        streams = {s["codec_type"]: s for s in probe["streams"]}
        assert streams["video"]["codec_name"] == "h264"
        assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
        assert streams["audio"]["codec_name"] == "aac"
        await asyncio.sleep(1.5)
        joiner = FlvClient(flv_url(server, "flv1"))
        task = asyncio.create_task(joiner.run())
        await wait_for(lambda: joiner.stats.painted >= 2 and joiner.stats.audio_tags > 20,
                       10, "decoded painted keyframes and audio")
        joiner.stop()
        stats = await task
        assert stats.first_tag_keyframe is True
        assert stats.first_frame_s is not None and stats.first_frame_s < 0.3, stats
        assert stats.codecs == {"h264", "aac"}
    finally:
        await anchor.close()


async def test_slow_reader_is_skipped_then_dropped_while_normal_reader_stays_in_budget(
    server: Any,
) -> None:
    anchor = await start_anchor(server, "flv2")
    output = server.app[FLV_KEY].outputs["flv2"]
    normal = FlvClient(flv_url(server, "flv2"))
    normal_task = asyncio.create_task(normal.run())
    # The slow reader: a raw socket with a tiny receive buffer that reads ~4 KB/s, then stops.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    port = int(server.url.rsplit(":", 1)[1])
    await loop.sock_connect(sock, ("127.0.0.1", port))
    path = server.flv_url("flv2", "slow").removeprefix(server.url)
    await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\n"
                                  f"Host: x\r\n\r\n".encode())
    try:
        await wait_for(lambda: len(output.readers) == 2, 5, "two readers")
        port_of_slow = sock.getsockname()[1]
        slow = next(r for r in output.readers
                    if r._transport.get_extra_info("peername")[1] == port_of_slow)
        for _ in range(40):  # 8 s at 4 KB/s
            await loop.sock_recv(sock, 800)
            await asyncio.sleep(0.2)
        assert slow.skips >= 1, "the slow reader was never skipped ahead"
        assert not slow.closed
        await wait_for(lambda: slow.closed, 8, "the stuck reader dropped")  # stops reading
        assert slow.close_reason == "stuck"
        await asyncio.sleep(1.0)
        assert not normal_task.done()
        samples = [ms for _, ms in normal.stats.latencies]
        assert len(samples) > 200
        budget = server.config.flv_latency_budget_ms
        assert max(samples) < budget, (max(samples), sorted(samples)[len(samples) // 2])
        assert normal.stats.discontinuities == 0
    finally:
        sock.close()
        normal.stop()
        await normal_task
        await anchor.close()
