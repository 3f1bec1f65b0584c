"""The ``events`` data channel end to end: real aiortc participants, the real bus, the SFU in
one process and with viewers in worker processes. The control plane's handler here is a small
real one (chat to the bus); the commerce gateway plugs into the same interface."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.event_bridge import EventBridge
from sfu.node import NODE_KEY
from shopcast.config import Config
from signaling.bus import Bus
from signaling.service import SIGNALING_KEY
from signaling.tokens import Claims

pytestmark = pytest.mark.slow


class ChatHandler:
    """Chat goes to the bus; anything else is an error to that client only."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def handle(self, room: str, claims: Claims, raw: bytes) -> list[bytes]:
        event = msgpack.unpackb(raw, raw=False)
        if isinstance(event, dict) and event.get("type") == "chat":
            await self.bus.publish(
                room, {"type": "chat", "from": claims.identity, "text": str(event["text"])}
            )
            return []
        return [msgpack.packb({"type": "error", "code": "unknown_event"})]

    async def snapshot(self, room: str) -> bytes:
        packed: bytes = msgpack.packb({"type": "state", "room": room})
        return packed


@pytest.fixture(params=[0, 2], ids=["one-process", "two-workers"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    from conftest import free_port

    return Config(
        host="127.0.0.1", port=free_port(), secret="test-secret",
        secret_file=str(tmp_path / "secret"), ice_hosts=["127.0.0.1"], workers=request.param,
    )


async def wait_for(predicate: Any, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_chat_from_one_viewer_reaches_fifty_viewers_in_seq_order(server: Any) -> None:
    node = server.app[NODE_KEY]
    node.attach_events(EventBridge(server.app[SIGNALING_KEY].bus, ChatHandler(
        server.app[SIGNALING_KEY].bus)))
    anchor = await publish(
        server.url, "talk", server.token("talk", "anchor", "publish"),
        PaintedVideoTrack(), ToneAudioTrack(),
    )
    await wait_for(lambda: "talk" in node.rooms and node.rooms["talk"].live, 10, "anchor live")
    viewers = []
    try:
        for i in range(50):
            viewers.append(await play(
                server.url, "talk", server.token("talk", f"v{i}", "subscribe", "chat"),
                decode=False, events=True,
            ))
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), 30, "join state")
        sender = viewers[7].events
        for n in range(3):
            sender.send({"type": "chat", "text": f"<script>alert({n})</script>"})
        sender.send({"type": "dance"})
        await wait_for(
            lambda: all(len(v.events.of_type("chat")) >= 3 for v in viewers), 15, "chat at all"
        )
        for viewer in viewers:
            chats = viewer.events.of_type("chat")
            assert [c["text"] for c in chats] == [f"<script>alert({n})</script>" for n in range(3)]
            assert all(c["from"] == "v7" for c in chats)
            seqs = [c["seq"] for c in chats]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
            assert viewer.events.received[0]["type"] == "state"  # join state comes first
        await wait_for(lambda: sender.of_type("error"), 5, "error to the sender")
        assert sum(len(v.events.of_type("error")) for v in viewers) == 1  # only to the sender
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


async def test_garbage_and_oversized_messages_get_an_error_and_change_nothing(
    server: Any,
) -> None:
    node = server.app[NODE_KEY]
    bus = server.app[SIGNALING_KEY].bus
    node.attach_events(EventBridge(bus, ChatHandler(bus)))
    anchor = await publish(
        server.url, "junk", server.token("junk", "anchor", "publish"),
        PaintedVideoTrack(), ToneAudioTrack(),
    )
    await wait_for(lambda: "junk" in node.rooms and node.rooms["junk"].live, 10, "anchor live")
    viewer = await play(server.url, "junk", server.token("junk", "v", "subscribe"),
                        decode=False, events=True)
    try:
        await wait_for(lambda: viewer.events.of_type("state"), 15, "join state")
        await asyncio.sleep(0.5)
        history_before = await bus.history("junk")
        viewer.events.channel.send("text, not msgpack")
        viewer.events.channel.send(b"\x00" * (17 * 1024))
        await wait_for(lambda: len(viewer.events.of_type("error")) >= 2, 5, "two errors")
        codes = {e["code"] for e in viewer.events.of_type("error")}
        assert codes == {"bad_message", "too_large"}
        assert await bus.history("junk") == history_before  # nothing reached the room
    finally:
        await viewer.close()
        await anchor.close()
