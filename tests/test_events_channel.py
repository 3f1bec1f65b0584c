"""The ``events`` data channel end to end: real aiortc participants, the real control plane
(gateway and bus), the SFU in one process and with viewers in worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import loopback_config
from live_helpers import WsClient
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.config import Config
from signaling.service import SIGNALING_KEY

pytestmark = pytest.mark.slow


@pytest.fixture(params=[0, 2], ids=["one-process", "two-workers"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """Every test here runs with viewers in one process and in two worker processes."""
    return loopback_config(tmp_path, workers=request.param)



async def test_chat_from_one_viewer_reaches_fifty_viewers_and_websockets_in_seq_order(
    server: Any,
) -> None:
    """A chat sent by one WebRTC viewer reaches 50 WebRTC viewers (data channel) and 5
    FLV-side WebSocket clients in seq order; a resume with a seq gets exactly what was missed."""
    node = server.app[NODE_KEY]
    anchor = await publish(
        server.url, "talk", server.token("talk", "anchor", "publish"),
        PaintedVideoTrack(), ToneAudioTrack(),
    )
    await wait_for(lambda: "talk" in node.rooms and node.rooms["talk"].live, 10, "anchor live")
    viewers: list[Any] = []
    sockets = [
        await WsClient.open(server.url, "talk", server.token("talk", f"w{i}", "subscribe"))
        for i in range(5)
    ]
    try:
        for i in range(50):
            viewers.append(await play(
                server.url, "talk", server.token("talk", f"v{i}", "subscribe", "chat"),
                decode=False, events=True,
            ))
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), 30, "join state")
        sender = viewers[7].events
        texts = [f"<script>alert({n})</script>" for n in range(3)]
        for text in texts:
            sender.send({"type": "chat", "text": text})
        sender.send({"type": "dance"})
        await wait_for(
            lambda: all(len(v.events.of_type("chat")) >= 3 for v in viewers), 15, "chat at all"
        )
        first_seq = None
        for viewer in viewers:
            chats = viewer.events.of_type("chat")
            assert [c["text"] for c in chats] == texts  # text stays text
            assert all(c["identity"] == "v7" for c in chats)
            seqs = [c["seq"] for c in chats]
            assert seqs == list(range(seqs[0], seqs[0] + 3))
            first_seq = seqs[0]
            assert viewer.events.received[0]["type"] == "state"  # join state comes first
        for ws in sockets:
            got = []
            while len(got) < 3:
                event = await ws.next()
                if event["type"] == "chat":
                    got.append(event)
            assert [(e["seq"], e["text"]) for e in got] == [
                (first_seq + n, texts[n]) for n in range(3)
            ]
        await wait_for(lambda: sender.of_type("error"), 5, "error to the sender")
        assert sum(len(v.events.of_type("error")) for v in viewers) == 1  # only to the sender

        late = viewers[20].events  # resume over the data channel: exactly what followed a seq
        before = len(late.received)
        assert first_seq is not None
        late.send({"type": "resume", "after_seq": first_seq})
        await wait_for(lambda: len(late.received) >= before + 2, 10, "resumed events")
        resumed = late.received[before:before + 2]
        assert [(e["seq"], e["text"]) for e in resumed] == [
            (first_seq + 1, texts[1]), (first_seq + 2, texts[2])
        ]
    finally:
        for viewer in viewers:
            await viewer.close()
        for ws in sockets:
            await ws.close()
        await anchor.close()


async def quiet_history(bus: Any, room: str) -> Any:
    """The room's history once the joins' own events have landed: the same for 1 s (at most
    10 s), so that a late join event is not taken for one the garbage caused."""
    history = await bus.history(room)
    for _ in range(10):
        await asyncio.sleep(1.0)
        newer = await bus.history(room)
        if newer == history:
            return history
        history = newer
    raise AssertionError(f"room {room!r} never went quiet: {history[-3:]!r}")


async def test_garbage_and_oversized_messages_get_an_error_and_change_nothing(
    server: Any,
) -> None:
    node = server.app[NODE_KEY]
    bus = server.app[SIGNALING_KEY].bus
    anchor = await publish(
        server.url, "junk", server.token("junk", "anchor", "publish"),
        PaintedVideoTrack(), ToneAudioTrack(),
    )
    await wait_for(lambda: "junk" in node.rooms and node.rooms["junk"].live, 10, "anchor live")
    viewer = await play(server.url, "junk", server.token("junk", "v", "subscribe"),
                        decode=False, events=True)
    try:
        await wait_for(lambda: viewer.events.of_type("state"), 15, "join state")
        history_before = await quiet_history(bus, "junk")
        viewer.events.channel.send("text, not msgpack")
        viewer.events.channel.send(b"\x00" * (17 * 1024))
        await wait_for(lambda: len(viewer.events.of_type("error")) >= 2, 5, "two errors")
        codes = {e["code"] for e in viewer.events.of_type("error")}
        assert codes == {"bad_message", "too_large"}
        assert await bus.history("junk") == history_before  # nothing reached the room
    finally:
        await viewer.close()
        await anchor.close()
