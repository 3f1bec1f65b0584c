"""Co-host invitations and the stage: the anchor invites, the guest accepts or declines, the
anchor removes; a co-host's arrival and departure are ``cohost`` events and a joiner's ``state``
lists the publishers by slot. Backend-neutral parts run on memory and on a real redis-server."""

from __future__ import annotations

from typing import Any

import aiohttp
from live_helpers import Kicks, claims, make_gateway, send

from signaling.bus import Bus
from signaling.live.cohosts import stage
from signaling.rooms import RoomService
from signaling.store import ParticipantRecord, Store, Transport
from signaling.tokens import Grant
from signaling.webhooks import Webhooks, WebhookSettings

ANCHOR = claims("anchor", Grant.PUBLISH, Grant.SUBSCRIBE)
GUEST = claims("guest", Grant.COHOST, Grant.SUBSCRIBE)
VIEWER = claims("viewer", Grant.SUBSCRIBE, Grant.CHAT)

pytest_plugins = ["store_fixtures"]  # store, bus: memory and redis


async def cohost_events(bus: Bus, room: str = "r") -> list[tuple[str, str]]:
    history = await bus.history(room, 0, 100)
    return [(e.data["action"], e.data["identity"]) for e in history if e.data["type"] == "cohost"]


async def test_invite_accept_remove_decline(store: Store, bus: Bus) -> None:
    kicks = Kicks()
    gateway = make_gateway(store, bus, kicks)
    [refused] = await send(gateway, GUEST, type="cohost_accept", cid="a0")
    assert (refused["type"], refused["code"], refused["cid"]) == ("error", "not_invited", "a0")
    [refused] = await send(gateway, VIEWER, type="cohost_invite", identity="guest")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    [refused] = await send(gateway, ANCHOR, type="cohost_invite", identity="anchor")
    assert refused["code"] == "invalid"
    assert not await gateway.cohosts.admits("r", "guest")

    [ack] = await send(gateway, ANCHOR, type="cohost_invite", identity="guest", cid="i1")
    assert ack["type"] == "ack" and ack["result"]["status"] == "invited"
    assert ack["result"]["invited_by"] == "anchor"
    assert await gateway.cohosts.admits("r", "guest")
    state = await gateway.state("r")
    assert [(c["identity"], c["status"]) for c in state["cohosts"]] == [("guest", "invited")]

    [ack] = await send(gateway, GUEST, type="cohost_accept")
    assert ack["result"]["status"] == "accepted"
    assert [c["status"] for c in (await gateway.state("r"))["cohosts"]] == ["accepted"]

    [ack] = await send(gateway, ANCHOR, type="cohost_remove", identity="guest")
    assert ack["type"] == "ack"
    assert kicks.calls == [("r", "guest")]  # the co-host's sessions end
    assert not await gateway.cohosts.admits("r", "guest")
    [refused] = await send(gateway, GUEST, type="cohost_accept")
    assert refused["code"] == "not_invited"  # an accept after removal brings nothing back

    await send(gateway, ANCHOR, type="cohost_invite", identity="guest")
    [ack] = await send(gateway, GUEST, type="cohost_decline")
    assert ack["type"] == "ack"
    assert not await gateway.cohosts.admits("r", "guest")
    [refused] = await send(gateway, GUEST, type="cohost_decline")
    assert refused["code"] == "not_invited"
    assert await cohost_events(bus) == [
        ("invited", "guest"), ("accepted", "guest"), ("removed", "guest"),
        ("invited", "guest"), ("declined", "guest"),
    ]


async def test_reinvite_resets_the_answer(store: Store, bus: Bus) -> None:
    gateway = make_gateway(store, bus)
    await send(gateway, ANCHOR, type="cohost_invite", identity="guest")
    await send(gateway, GUEST, type="cohost_accept")
    await send(gateway, ANCHOR, type="cohost_invite", identity="guest")
    assert [c["status"] for c in (await gateway.state("r"))["cohosts"]] == ["invited"]


def publisher(sid: str, identity: str, slot: int) -> ParticipantRecord:
    return ParticipantRecord(sid=sid, identity=identity, transport=Transport.WHIP,
                             role="publisher", slot=slot, joined_at=1.0)


async def test_stage_and_cohost_events_follow_sessions(store: Store, bus: Bus) -> None:
    rooms = RoomService(store, bus, Webhooks(WebhookSettings()))
    gateway = make_gateway(store, bus)
    await rooms.session_joined("r", publisher("P1", "anchor", 0))
    await rooms.session_joined("r", ParticipantRecord(sid="V1", identity="v",
                                                      transport=Transport.WHEP))
    await rooms.session_joined("r", publisher("P2", "guest", 1))
    state = await gateway.state("r")
    assert [(p["identity"], p["slot"]) for p in state["publishers"]] == [("anchor", 0),
                                                                         ("guest", 1)]
    assert state["layout"] == "side_by_side"
    await rooms.session_left("r", "P2")
    assert [p["identity"] for p in await stage(store, "r")] == ["anchor"]
    history = [e.data for e in await bus.history("r", 0, 100) if e.data["type"] == "cohost"]
    assert [(e["action"], e["identity"], e["slot"]) for e in history] == [
        ("joined", "guest", 1), ("left", "guest", 1)]  # the anchor is not a co-host
    await rooms.close("r")
    assert await stage(store, "r") == []


async def _call(http: aiohttp.ClientSession, method: str, url: str, token: str,
                json: Any = None) -> tuple[int, Any]:
    async with http.request(method, url, json=json,
                            headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def test_rest_invitations(server: Any) -> None:
    base = f"{server.url}/api/v1/rooms/shop/cohosts"
    anchor = server.token("shop", "anchor", "publish")
    guest = server.token("shop", "guest", "cohost")
    other = server.token("shop", "other", "cohost")
    viewer = server.token("shop", "v", "subscribe")
    async with aiohttp.ClientSession() as http:
        status, body = await _call(http, "POST", base, viewer, {"identity": "guest"})
        assert (status, body["error"]["code"]) == (403, "missing_grant")
        status, body = await _call(http, "POST", base, anchor, {})
        assert status == 400
        status, body = await _call(http, "POST", base, anchor, {"identity": "guest"})
        assert status == 201 and body["status"] == "invited" and body["invited_by"] == "anchor"
        status, body = await _call(http, "POST", f"{base}/guest/accept", other)
        assert (status, body["error"]["code"]) == (403, "not_your_invitation")
        status, body = await _call(http, "POST", f"{base}/other/accept", other)
        assert (status, body["error"]["code"]) == (404, "not_invited")
        status, body = await _call(http, "POST", f"{base}/guest/accept", guest)
        assert status == 200 and body["status"] == "accepted"
        status, body = await _call(http, "GET", base, anchor)
        assert [(c["identity"], c["status"]) for c in body["cohosts"]] == [("guest", "accepted")]
        status, body = await _call(http, "DELETE", f"{base}/guest", anchor)
        assert status == 200 and body == {"identity": "guest", "sessions_ended": 0}
        status, body = await _call(http, "DELETE", f"{base}/guest", anchor)
        assert (status, body["error"]["code"]) == (404, "not_found")
        await _call(http, "POST", base, anchor, {"identity": "guest"})
        status, _ = await _call(http, "POST", f"{base}/guest/decline", guest)
        assert status == 204
        status, body = await _call(http, "GET", base, anchor)
        assert body["cohosts"] == []
