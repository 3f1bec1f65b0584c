"""WebSocket signaling at /ws: join with a token, publish and subscribe over the socket with real
aiortc peers, heartbeats, room events and chat on the same socket, and resume after a drop
(legs live on) or expiry (legs closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import _codec_preferences, loopback_only
from loadtest.media import PaintedVideoTrack, ToneAudioTrack, read_painted
from sfu.node import NODE_KEY
from shopcast.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, ws_resume_s=2)


class Socket:
    """A /ws client: msgpack maps both ways; replies are matched by ``cid``."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.events: list[dict[str, Any]] = []
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, base_url: str, token: str) -> Socket:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(f"{base_url}/ws?token={token}")
        return cls(http, ws)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            data = msgpack.unpackb(message.data, raw=False)
            waiter = self._replies.pop(str(data.get("cid")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            else:
                self.events.append(data)

    async def send(self, **message: Any) -> None:
        """A message that gets no reply of its own (chat: it comes back as a room event)."""
        await self.ws.send_bytes(msgpack.packb(message, use_bin_type=True))

    async def request(self, **message: Any) -> dict[str, Any]:
        self._next += 1
        cid = f"c{self._next}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = waiter
        await self.ws.send_bytes(msgpack.packb({**message, "cid": cid}, use_bin_type=True))
        return await asyncio.wait_for(waiter, 15)

    async def first(self, kind: str) -> dict[str, Any]:
        await wait_for(lambda: any(e["type"] == kind for e in self.events), 10, kind)
        return next(e for e in self.events if e["type"] == kind)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.http.close()


async def negotiate(socket: Socket, pc: RTCPeerConnection, kind: str) -> dict[str, Any]:
    await pc.setLocalDescription(await pc.createOffer())
    reply = await socket.request(type=kind, sdp=pc.localDescription.sdp)
    if reply["type"] == "answer":
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
    return reply


def publisher_pc() -> RTCPeerConnection:
    loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver(PaintedVideoTrack(colour="red"), direction="sendonly")
    video.setCodecPreferences(_codec_preferences("video", "H264", only=True))
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    return pc


class PaintedViewer:
    """A recvonly aiortc peer that decodes video and counts painted frames."""

    def __init__(self) -> None:
        loopback_only()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video = self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.painted = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.video.receiver.track.recv()
                if read_painted(frame) is not None:
                    self.painted += 1
        except MediaStreamError:
            pass

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.pc.close()


async def test_publish_and_subscribe_over_the_socket(server: Any) -> None:
    anchor = await Socket.open(server.url, server.token("wsr", "anchor", "publish", "chat"))
    viewer_socket = await Socket.open(server.url, server.token("wsr", "v", "subscribe", "chat"))
    publisher, viewer = publisher_pc(), PaintedViewer()
    try:
        joined = await anchor.request(type="join", room="wsr")
        assert joined["type"] == "joined" and joined["room"] == "wsr" and joined["session"]
        assert (await anchor.first("state"))["publishers"] == []
        answer = await negotiate(anchor, publisher, "publish")
        assert answer["type"] == "answer" and answer["leg"], answer

        await viewer_socket.request(type="join", room="wsr")
        refused = await negotiate(viewer_socket, publisher_pc(), "publish")
        assert (refused["type"], refused["code"]) == ("error", "missing_grant")
        node = server.app[NODE_KEY]
        await wait_for(lambda: "wsr" in node.rooms and node.rooms["wsr"].live, 10, "live")
        reply = await negotiate(viewer_socket, viewer.pc, "subscribe")
        assert reply["type"] == "answer", reply
        viewer.start()
        await wait_for(lambda: viewer.painted >= 20, 15, "viewer decodes painted frames")

        pong = await viewer_socket.request(type="ping")
        assert pong["type"] == "pong" and pong["server_ms"] > 0
        await viewer_socket.send(type="chat", text="hello over /ws")
        chat = await anchor.first("chat")
        assert chat["text"] == "hello over /ws" and chat["identity"] == "v"
        closed = await viewer_socket.request(type="close", leg=reply["leg"])
        assert closed == {"type": "closed", "leg": reply["leg"], "cid": closed["cid"]}
        await wait_for(lambda: reply["leg"] not in node.sessions, 5, "viewer leg closed")
    finally:
        await viewer.close()
        await publisher.close()
        await viewer_socket.close()
        await anchor.close()


async def test_first_message_must_join_and_frames_are_msgpack(server: Any) -> None:
    socket = await Socket.open(server.url, server.token("wsj", "v", "subscribe"))
    try:
        reply = await socket.request(type="ping")
        assert (reply["type"], reply["code"]) == ("error", "join_first")
    finally:
        await socket.close()
    socket = await Socket.open(server.url, server.token("wsj", "v", "subscribe"))
    try:
        reply = await socket.request(type="join", room="other")
        assert reply["code"] == "wrong_room"
    finally:
        await socket.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/ws?token=nope") as response:
            assert response.status == 401


async def test_resume_keeps_the_legs_and_replays_missed_events(server: Any) -> None:
    node = server.app[NODE_KEY]
    anchor = await Socket.open(server.url, server.token("wsres", "anchor", "publish", "chat"))
    viewer = PaintedViewer()
    publisher = publisher_pc()
    token = server.token("wsres", "v", "subscribe", "chat")
    socket = await Socket.open(server.url, token)
    try:
        await anchor.request(type="join", room="wsres")
        await negotiate(anchor, publisher, "publish")
        await wait_for(lambda: "wsres" in node.rooms and node.rooms["wsres"].live, 10, "live")
        joined = await socket.request(type="join", room="wsres")
        state = await socket.first("state")
        leg = (await negotiate(socket, viewer.pc, "subscribe"))["leg"]
        viewer.start()
        await wait_for(lambda: viewer.painted >= 10, 15, "playing")

        await socket.close()  # the page loses its socket
        await anchor.send(type="chat", text="while you were away")
        await asyncio.sleep(1.0)
        before = viewer.painted
        assert leg in node.sessions, "the leg waits for a resume"
        socket = await Socket.open(server.url, token)
        resumed = await socket.request(type="resume", session=joined["session"],
                                       after_seq=state["seq"])
        assert resumed["type"] == "resumed" and resumed["legs"] == [leg]
        missed = await socket.first("chat")
        assert missed["text"] == "while you were away"
        await asyncio.sleep(2.5)  # past the grace period: resumed, so nothing closes
        assert leg in node.sessions and viewer.painted > before + 30

        await socket.close()  # this time nobody comes back
        await wait_for(lambda: leg not in node.sessions, 10, "leg closed after the grace period")
        stranger = await Socket.open(server.url, server.token("wsres", "x", "subscribe"))
        late = await stranger.request(type="resume", session=joined["session"], after_seq=0)
        assert late["code"] == "unknown_session"
        await stranger.close()
    finally:
        await viewer.close()
        await publisher.close()
        await socket.close()
        await anchor.close()
