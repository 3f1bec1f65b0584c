"""Real worker processes speak the declared protocol: requests are answered, a media error
crosses as its own class, and what the worker refuses is counted up to /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.errors import BadOffer
from sfu.node import NODE_KEY
from sfu.room_layout import RoomLayout
from sfu.settings import NodeSettings
from sfu.worker_pool import WorkerPool
from sfu.worker_protocol import CloseLeg, CloseLegReply
from shopcast.config import Config

pytestmark = pytest.mark.slow
WAIT_S = 10.0  # worker stats come once a second


async def test_a_worker_process_round_trip() -> None:
    pool = WorkerPool(NodeSettings(workers=1, ice_hosts=["127.0.0.1"]), lambda leg: None)
    await pool.start()
    try:
        worker = pool.workers[0]
        reply = await worker.control.request(CloseLeg("no-such-leg"), CloseLegReply)
        assert reply == CloseLegReply(closed=False)

        layout = RoomLayout(ssrcs=[{"audio": 1, "video": 2}], codecs={})
        with pytest.raises(BadOffer) as caught:
            await pool.open_viewer("shop", "viewer-1", "not an SDP offer", layout, [])
        assert caught.value.code == "malformed_sdp"
        assert "v=0" in caught.value.message

        # what a future or buggy peer might send: refused and counted there, never acted on
        worker.control._send_map({"op": "prodcuer_closed", "key": 1})
        worker.control._send_map({"op": "producer_closed", "key": "1"})
        worker.control._send_map({"op": "ready", "pid": 1})
        await wait_for(lambda: pool.bad_messages()["malformed"] == 1
                    and pool.bad_messages()["unknown_op"] == 1
                    and pool.bad_messages()["wrong_direction"] == 1,
                    WAIT_S, "the worker's stats count its refusals")
        assert pool.bad_messages()["undecodable"] == 0
        assert worker.alive and worker.process.returncode is None

        # and the worker still serves
        reply = await worker.control.request(CloseLeg("no-such-leg"), CloseLegReply)
        assert reply.closed is False
    finally:
        await pool.stop()
    assert pool.workers[0].process.returncode == 0


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=1)


async def test_metrics_show_refused_worker_messages(server: Any) -> None:
    pool = server.app[NODE_KEY].workers
    assert pool is not None

    async def metric(reason: str) -> str:
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            text = await resp.text()
        prefix = f'shopcast_worker_bad_messages_total{{reason="{reason}"}} '
        return next(ln for ln in text.splitlines() if ln.startswith(prefix)).split()[-1]

    assert await metric("unknown_op") == "0"
    pool.workers[0].control._send_map({"op": "nonsense"})
    await wait_for(lambda: pool.bad_messages()["unknown_op"] == 1, WAIT_S, "the worker's stats")
    assert await metric("unknown_op") == "1"
    assert await metric("malformed") == "0"


async def vp8_only_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    capabilities = RTCRtpReceiver.getCapabilities("video")
    assert capabilities is not None
    video.setCodecPreferences([c for c in capabilities.codecs if c.mimeType == "video/VP8"])
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_a_media_error_in_a_worker_reaches_the_whep_client_as_its_code(server: Any) -> None:
    """The worker refuses the viewer (UnsupportedCodec); the door answers as it would for a
    viewer in its own process, and the worker is left with no leg and no feed."""
    pool = server.app[NODE_KEY].workers
    anchor = await publish(server.url, "shop", server.token("shop", "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack(), prefer="H264")
    try:
        node = server.app[NODE_KEY]
        await wait_for(lambda: "shop" in node.rooms and node.rooms["shop"].live, WAIT_S, "live")
        headers = {"Authorization": f"Bearer {server.token('shop', 'v', 'subscribe')}",
                   "Content-Type": "application/sdp"}
        async with aiohttp.ClientSession() as http, http.post(
            f"{server.url}/whep/shop", data=await vp8_only_offer(), headers=headers
        ) as resp:
            status, body = resp.status, await resp.json()
        assert status == 400, body
        assert body["error"]["code"] == "unsupported_codec"
        assert "H264" in body["error"]["message"] or "H.264" in body["error"]["message"]
        assert pool.workers[0].legs == {}
        assert pool.workers[0].feeds == {}
    finally:
        await anchor.close()
