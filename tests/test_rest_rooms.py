"""REST rooms and participants on both backends: JSON errors, grants, live state, effects."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from rest_helpers import Api, RecordingMedia, join, signaling_of

from shopcast.config import Config

pytest_plugins = ["store_fixtures"]


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    """The server fixture's config, once on memory and once on Redis."""
    config.redis = backend
    config.redis_prefix = prefix
    return config


@pytest.fixture
def admin(server: Any) -> Api:
    return Api(server.url + "/api/v1", server.token("*", "ops", "admin"))


@pytest.fixture
def media(server: Any) -> RecordingMedia:
    recording = RecordingMedia()
    signaling_of(server).rooms.media = recording
    return recording


async def test_create_list_get_update_close(server: Any, admin: Api, media: RecordingMedia) -> None:
    status, room = await admin.post("/rooms", {"name": "shop1", "metadata": {"title": "Sale"}})
    assert status == 201, room
    assert room["name"] == "shop1" and room["metadata"] == {"title": "Sale"}
    assert room["counts"]["participants"] == 0 and room["auto"] is False
    status, body = await admin.post("/rooms", {"name": "shop1"})
    assert (status, body["error"]["code"]) == (409, "room_exists")
    await admin.post("/rooms", {"name": "shop2"})

    status, listed = await admin.get("/rooms")
    assert status == 200 and [r["name"] for r in listed["rooms"]] == ["shop1", "shop2"]

    status, updated = await admin.patch("/rooms/shop1", {"metadata": {"title": "Flash"}})
    assert status == 200 and updated["metadata"] == {"title": "Flash"}

    status, state = await admin.get("/rooms/shop1")
    assert status == 200 and state["live"] is False and state["publishers"] == []

    status, _ = await admin.delete("/rooms/shop1")
    assert status == 204 and media.calls == [("end_room", "shop1")]
    status, body = await admin.get("/rooms/shop1")
    assert (status, body["error"]["code"]) == (404, "room_not_found")
    assert (await admin.delete("/rooms/shop1"))[0] == 404


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "'name' is required"),
        ({"name": ""}, "at least 1"),
        ({"name": "a b"}, "must match"),
        ({"name": "ok", "metadata": []}, "metadata: must be an object"),
        ({"name": "ok", "color": "red"}, "color: is not a known field"),
        ("just a string", "must be an object"),
    ],
)
async def test_bad_bodies_get_400_and_change_nothing(
    admin: Api, body: Any, fragment: str
) -> None:
    status, error = await admin.post("/rooms", body)
    assert status == 400 and error["error"]["code"] == "invalid_body"
    assert fragment in error["error"]["message"]
    assert (await admin.get("/rooms"))[1]["rooms"] == []


async def test_malformed_json_is_a_json_error(server: Any, admin: Api) -> None:
    status, _ = await admin.call(
        "POST", "/rooms", None, headers={"Content-Type": "application/json"}
    )
    assert status == 400  # an empty body lacks the name
    async with aiohttp.ClientSession() as http, http.post(
        admin.base + "/rooms", data=b"{nope", headers={"Authorization": f"Bearer {admin.token}"}
    ) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "malformed_json"


async def test_tokens_and_grants(server: Any, admin: Api) -> None:
    anon = Api(admin.base)
    status, error = await anon.get("/rooms")
    assert (status, error["error"]["code"]) == (401, "missing_token")
    viewer = server.token("shop1", "v", "subscribe")
    status, error = await anon.get("/rooms", token=viewer)
    assert (status, error["error"]["code"]) == (403, "missing_grant")
    other_room_admin = server.token("elsewhere", "ops", "admin")
    await admin.post("/rooms", {"name": "shop1"})
    status, error = await anon.get("/rooms/shop1", token=other_room_admin)
    assert (status, error["error"]["code"]) == (403, "wrong_room")
    room_admin = server.token("shop1", "ops", "admin")
    assert (await anon.get("/rooms/shop1", token=room_admin))[0] == 200
    expired = server.token("*", "ops", "admin", ttl=1)
    await asyncio.sleep(1.1)
    status, error = await anon.get("/rooms", token=expired)
    assert status == 401


async def test_live_state_and_participants(server: Any, admin: Api, media: RecordingMedia) -> None:
    signaling = signaling_of(server)
    await join(signaling, "live1", "P1", "anchor", "whip", tracks=("video", "audio"))
    await join(signaling, "live1", "V1", "alice")
    await join(signaling, "live1", "V2", "alice", "flv")
    await join(signaling, "live1", "V3", "bob", "ws")

    status, state = await admin.get("/rooms/live1")
    assert status == 200 and state["auto"] is True and state["live"] is True
    assert [p["identity"] for p in state["publishers"]] == ["anchor"]
    assert {t["kind"] for t in state["publishers"][0]["tracks"]} == {"audio", "video"}
    assert state["counts"] == {
        "participants": 4, "viewers": 3,
        "by_transport": {"whip": 1, "rtmp": 0, "whep": 1, "flv": 1, "ws": 1},
    }
    assert state["seq"] > 0

    status, listed = await admin.get("/rooms/live1/participants")
    assert [p["sid"] for p in listed["participants"]] == ["P1", "V1", "V2", "V3"]
    status, alice = await admin.get("/rooms/live1/participants/alice")
    assert status == 200 and [s["transport"] for s in alice["sessions"]] == ["whep", "flv"]
    assert (await admin.get("/rooms/live1/participants/nobody"))[0] == 404

    status, updated = await admin.patch("/rooms/live1/participants/alice",
                                        {"metadata": {"vip": True}})
    assert status == 200 and all(s["metadata"] == {"vip": True} for s in updated["sessions"])

    status, muted = await admin.post("/rooms/live1/participants/anchor/mute", {"kind": "audio"})
    assert status == 200 and [t["kind"] for t in muted["tracks"]] == ["audio"]
    assert muted["tracks"][0]["muted"] is True
    assert media.calls == [("mute_track", "live1", "P1", "TR_P1_audio", True)]
    status, unmuted = await admin.post("/rooms/live1/participants/anchor/mute",
                                       {"track_sid": "TR_P1_audio", "muted": False})
    assert status == 200 and unmuted["tracks"][0]["muted"] is False
    status, error = await admin.post("/rooms/live1/participants/alice/mute", {})
    assert (status, error["error"]["code"]) == (404, "track_not_found")

    media.calls.clear()
    status, kicked = await admin.delete("/rooms/live1/participants/alice")
    assert status == 200 and [s["sid"] for s in kicked["sessions"]] == ["V1", "V2"]
    assert media.calls == [("end_session", "live1", "V1"), ("end_session", "live1", "V2")]
    signaling.reporter.left("live1", "V1")  # the SFU reports the ended leg: no second event
    await signaling.reporter.drain()
    status, state = await admin.get("/rooms/live1")
    assert state["counts"]["viewers"] == 1
    assert (await admin.delete("/rooms/live1/participants/alice"))[0] == 404


async def test_events_follow_room_changes(server: Any, admin: Api, media: RecordingMedia) -> None:
    signaling = signaling_of(server)
    await admin.post("/rooms", {"name": "ev"})
    async with signaling.bus.subscribe("ev") as events:
        await join(signaling, "ev", "P1", "anchor", "whip", tracks=("video",))
        await join(signaling, "ev", "V1", "viewer")
        await admin.post("/rooms/ev/participants/anchor/mute", {})
        await admin.delete("/rooms/ev/participants/viewer")
        await admin.delete("/rooms/ev")
        seen = []
        while not seen or seen[-1] != "room_closed":
            seen.append((await asyncio.wait_for(events.get(), 5)).type)
    # publishers are announced one by one; viewers only as a coalesced count
    assert [t for t in seen if t != "viewers"] == [
        "participant_joined", "track_published", "track_muted", "room_closed",
    ]
    assert seen[1] == "viewers" and seen.count("viewers") <= 2


async def test_a_burst_of_viewers_is_one_count_not_an_event_each(server: Any, admin: Api) -> None:
    signaling = signaling_of(server)
    await admin.post("/rooms", {"name": "crowd"})
    async with signaling.bus.subscribe("crowd") as events:
        for i in range(100):
            await join(signaling, "crowd", f"V{i}", f"viewer{i}")
        await asyncio.sleep(1.3)  # the coalesced count goes out within a second
        seen = []
        with contextlib.suppress(TimeoutError):
            while True:
                seen.append((await asyncio.wait_for(events.get(), 0.3)).data)
    assert not [e for e in seen if e["type"] == "participant_joined"]
    counts = [e["count"] for e in seen if e["type"] == "viewers"]
    assert 1 <= len(counts) <= 2 and counts[-1] == 100


async def test_auto_room_finishes_when_its_last_session_leaves(server: Any, admin: Api) -> None:
    signaling = signaling_of(server)
    await join(signaling, "auto1", "P1", "anchor", "whip")
    await join(signaling, "auto1", "V1", "viewer")
    signaling.reporter.left("auto1", "P1")
    await signaling.reporter.drain()
    assert (await admin.get("/rooms/auto1"))[0] == 200
    signaling.reporter.left("auto1", "V1")
    await signaling.reporter.drain()
    assert (await admin.get("/rooms/auto1"))[0] == 404
    # a room created over REST stays until it is closed
    await admin.post("/rooms", {"name": "kept"})
    await join(signaling, "kept", "V1", "viewer")
    signaling.reporter.left("kept", "V1")
    await signaling.reporter.drain()
    assert (await admin.get("/rooms/kept"))[0] == 200


async def test_mint_token(server: Any, admin: Api) -> None:
    from signaling.tokens import Grant, verify

    status, minted = await admin.post(
        "/tokens", {"room": "shop1", "identity": "u1", "grants": ["subscribe", "chat"],
                    "name": "U", "ttl": 60},
    )
    assert status == 201
    claims = verify(server.config.secret, minted["token"])
    assert claims.identity == "u1" and claims.room == "shop1" and claims.name == "U"
    assert claims.grants == {Grant.SUBSCRIBE, Grant.CHAT}
    assert minted["expires_at"] == claims.expires_at
    status, error = await admin.post("/tokens", {"room": "r", "identity": "u", "grants": ["x"]})
    assert status == 400 and "grants[0]" in error["error"]["message"]
    status, error = await admin.post("/tokens", {"room": "r", "identity": "u", "grants": []})
    assert status == 400
    user = server.token("shop1", "u1", "publish", "chat")
    status, error = await admin.post(
        "/tokens", {"room": "shop1", "identity": "x", "grants": ["admin"]}, token=user
    )
    assert (status, error["error"]["code"]) == (403, "missing_grant")
    shop_admin = server.token("shop1", "owner", "admin")
    for room in ("*", "shop2"):  # a room's admin cannot widen its reach
        status, error = await admin.post(
            "/tokens", {"room": room, "identity": "x", "grants": ["admin"]}, token=shop_admin
        )
        assert (status, error["error"]["code"]) == (403, "wrong_room")
    status, _ = await admin.post(
        "/tokens", {"room": "shop1", "identity": "x", "grants": ["chat"]}, token=shop_admin
    )
    assert status == 201
