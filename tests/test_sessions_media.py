"""Real WHIP/WHEP sessions in the control plane, and REST acting on real media: the
participants list shows the anchor and viewers, kick ends a WHEP session, close ends a live
room, mute stops forwarding a track (and unmute resumes it). Both backends, one process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from rest_helpers import Api, signaling_of

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.config import Config

pytest_plugins = ["store_fixtures"]
pytestmark = pytest.mark.slow


@pytest.fixture
def config(config: Config, backend: str, prefix: str, request: pytest.FixtureRequest) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:  # with workers, viewers live in worker processes and reach
        config.workers = callspec.params.get("workers", 0)  # the node as RemoteViewer legs
    return config


async def eventually(check: Any, limit_s: float, what: str) -> Any:
    """Poll an async ``check`` until it returns something truthy."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.05)


async def live_room(server: Any, room: str) -> Any:
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    node = server.app[NODE_KEY]

    async def live() -> bool:
        return room in node.rooms and node.rooms[room].live

    await eventually(live, 10, "anchor live")
    return anchor


async def participants(admin: Api, room: str) -> list[dict[str, Any]]:
    status, body = await admin.get(f"/rooms/{room}/participants")
    return list(body["participants"]) if status == 200 else []


async def test_participants_show_the_real_anchor_and_viewers(server: Any) -> None:
    admin = Api(server.url + "/api/v1", server.token("*", "ops", "admin"))
    anchor = await live_room(server, "real1")
    viewers = [await play(server.url, "real1", server.token("real1", f"v{i}", "subscribe"),
                          decode=False) for i in range(2)]
    try:
        async def all_in() -> list[dict[str, Any]]:
            found = await participants(admin, "real1")
            tracked = [p for p in found if p["tracks"]]
            return found if len(found) == 3 and len(tracked) == 1 else []

        found = await eventually(all_in, 10, "anchor with tracks and two viewers")
        by_identity = {p["identity"]: p for p in found}
        anchor_record = by_identity["anchor"]
        assert anchor_record["transport"] == "whip" and anchor_record["role"] == "publisher"
        assert anchor_record["sid"] == anchor.resource_url.rsplit("/", 1)[1]
        assert sorted(t["kind"] for t in anchor_record["tracks"]) == ["audio", "video"]
        assert {t["sid"] for t in anchor_record["tracks"]} == {
            f"{anchor_record['sid']}:audio", f"{anchor_record['sid']}:video"}
        assert {by_identity[v]["transport"] for v in ("v0", "v1")} == {"whep"}
        status, state = await admin.get("/rooms/real1")
        assert status == 200 and state["live"] is True and state["auto"] is True
        assert state["counts"]["by_transport"]["whep"] == 2
        assert state["counts"]["by_transport"]["whip"] == 1

        await viewers[0].close()

        async def one_left() -> bool:
            return {p["identity"] for p in await participants(admin, "real1")} == {
                "anchor", "v1"}

        await eventually(one_left, 10, "v0 gone from the list")
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()

    async def finished() -> bool:
        return (await admin.get("/rooms/real1"))[0] == 404

    await eventually(finished, 10, "the auto room finished with its last session")


@pytest.mark.parametrize("workers", [0, 1])
async def test_rest_kick_ends_a_real_whep_session(server: Any, workers: int) -> None:
    admin = Api(server.url + "/api/v1", server.token("*", "ops", "admin"))
    node = server.app[NODE_KEY]
    anchor = await live_room(server, "kick1")
    viewer = await play(server.url, "kick1", server.token("kick1", "troll", "subscribe"),
                        decode=False)
    try:
        assert await viewer.wait_connected()
        leg_id = viewer.resource_url.rsplit("/", 1)[1]

        async def listed() -> bool:
            return any(p["sid"] == leg_id for p in await participants(admin, "kick1"))

        await eventually(listed, 10, "the viewer in the participants list")
        status, body = await admin.delete("/rooms/kick1/participants/troll")
        assert status == 200 and [s["sid"] for s in body["sessions"]] == [leg_id]
        assert leg_id not in node.sessions, "the WHEP leg is closed by the time kick answers"
        assert "troll" not in {p["identity"] for p in await participants(admin, "kick1")}

        async def viewer_cut_off() -> bool:
            return viewer.pc.connectionState in ("closed", "failed") or (
                viewer.packets == (await asyncio.sleep(1.0, viewer.packets)))

        await eventually(viewer_cut_off, 10, "no more packets reach the kicked viewer")
        assert anchor.pc.connectionState == "connected", "the anchor is untouched"
    finally:
        await viewer.close()
        await anchor.close()


async def test_rest_close_ends_a_live_room(server: Any) -> None:
    admin = Api(server.url + "/api/v1", server.token("*", "ops", "admin"))
    node = server.app[NODE_KEY]
    anchor = await live_room(server, "close1")
    viewer = await play(server.url, "close1", server.token("close1", "v", "subscribe"),
                        decode=False)
    try:
        assert await viewer.wait_connected()
        status, _ = await admin.delete("/rooms/close1")
        assert status == 204
        assert "close1" not in node.rooms and not [
            leg for leg in node.sessions.values() if leg.room == "close1"]
        await signaling_of(server).reporter.drain()
        assert (await admin.get("/rooms/close1"))[0] == 404
        assert await participants(admin, "close1") == []
    finally:
        await viewer.close()
        await anchor.close()


async def test_rest_mute_stops_forwarding_and_unmute_resumes(server: Any) -> None:
    admin = Api(server.url + "/api/v1", server.token("*", "ops", "admin"))
    anchor = await live_room(server, "mute1")
    viewer = await play(server.url, "mute1", server.token("mute1", "v", "subscribe"),
                        decode=False)
    try:
        assert await viewer.wait_connected()

        async def video_flows() -> bool:
            before = viewer.video.stream.packets if viewer.video else 0
            await asyncio.sleep(0.5)
            return (viewer.video.stream.packets if viewer.video else 0) > before

        await eventually(video_flows, 10, "video packets before the mute")

        async def tracked() -> bool:
            return any(p["tracks"] for p in await participants(admin, "mute1"))

        await eventually(tracked, 10, "the anchor's tracks recorded")
        status, body = await admin.post("/rooms/mute1/participants/anchor/mute",
                                        {"kind": "video"})
        assert status == 200 and [t["muted"] for t in body["tracks"]] == [True]
        await asyncio.sleep(0.5)  # packets in flight
        assert not await video_flows(), "a muted track reaches no viewer"
        audio_before = viewer.audio.stream.packets if viewer.audio else 0
        await asyncio.sleep(0.5)
        assert (viewer.audio.stream.packets if viewer.audio else 0) > audio_before, \
            "audio still flows"

        status, body = await admin.post("/rooms/mute1/participants/anchor/mute",
                                        {"kind": "video", "muted": False})
        assert status == 200 and [t["muted"] for t in body["tracks"]] == [False]
        await eventually(video_flows, 10, "video packets after the unmute")
    finally:
        await viewer.close()
        await anchor.close()
