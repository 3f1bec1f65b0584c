"""Every door's refusals reach ``/metrics`` as ``shopcast_door_refusals_total{door, reason}``.

One refusal (or more) is provoked at each door against the whole app, on both store backends:
WHIP, WHEP, HTTP-FLV, RTMP, ``/ws`` (at the upgrade and inside the socket), ``/ws/events`` and
REST, with statuses 400, 401, 403, 404, 409, 413, 415 and 429; each is read back from
``/metrics`` by door and reason, exactly once more than before. Statuses below 400 count
nothing, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack
import pytest
from conftest import free_port
from flv_helpers import start_anchor
from rtmp_clients import RawClient

from loadtest.clients import SignalingError, publish
from loadtest.media import PaintedVideoTrack
from shopcast.config import Config
from signaling.door_refusals import DOORS, OTHER_DOOR, DoorRefusals, door_of
from signaling.front_door import MAX_BODY_BYTES

pytest_plugins = ["store_fixtures"]

ROOM = "refuse1"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    config.rtmp_port = free_port()
    return config


def test_doors_and_reasons_stay_bounded() -> None:
    assert [door_of(p) for p in ("/whip/r", "/whep/r/x", "/live/r.flv", "/api/v1/rooms",
                                 "/ws", "/ws/events/r", "/metrics", "/wsx", "/viewer", "/")] \
        == ["whip", "whep", "flv", "rest", "ws", "ws_events", "metrics", OTHER_DOOR,
            OTHER_DOOR, OTHER_DOOR]
    assert {door for _, door in DOORS} | {OTHER_DOOR} >= {"whip", "whep", "flv", "rest", "ws"}
    refusals = DoorRefusals()
    refusals.count("rest", "Not A Code {injected}")
    for n in range(1000):
        refusals.count("rest", f"code_{n}")
    assert refusals.counts[("rest", "other")] > 1
    assert len(refusals.counts) <= 201
    rtmp = {"token_expired": 2}
    refusals.add_source("rtmp", rtmp)
    refusals.add_source("rtmp", {"token_expired": 1, "handshake_timeout": 4})
    rtmp["token_expired"] += 1  # read when rendered, not copied
    lines = refusals.lines()
    assert 'shopcast_door_refusals_total{door="rtmp",reason="token_expired"} 4' in lines
    assert 'shopcast_door_refusals_total{door="rtmp",reason="handshake_timeout"} 4' in lines


async def counts(http: aiohttp.ClientSession, server: Any) -> dict[tuple[str, str], int]:
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    found: dict[tuple[str, str], int] = {}
    prefix = 'shopcast_door_refusals_total{door="'
    for line in text.splitlines():
        if line.startswith(prefix):
            labels, _, value = line.removeprefix(prefix).partition("} ")
            door, _, reason = labels.partition('",reason="')
            found[(door, reason.rstrip('"'))] = int(value)
    return found


async def status_of(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[
        int, str]:
    async with http.request(method, url, **kw) as response:
        body = await response.json() if response.content_type == "application/json" else {}
        return response.status, body.get("error", {}).get("code", "")


@pytest.mark.slow
async def test_a_refusal_at_every_door_is_counted_by_door_and_reason(server: Any) -> None:
    token = server.token
    bearer = {"Authorization": f"Bearer {token(ROOM, 'fan', 'subscribe')}"}
    sdp = {"Content-Type": "application/sdp"}
    url = server.url
    anchor = await start_anchor(server, ROOM)
    try:
        async with aiohttp.ClientSession() as http:
            before = await counts(http, server)
            expected: dict[tuple[str, str], int] = {}

            async def refused(door: str, status: int, method: str, path: str, **kw: Any) -> None:
                got = await status_of(http, method, url + path, **kw)
                assert got[0] == status, (door, path, got)
                expected[(door, got[1])] = expected.get((door, got[1]), 0) + 1

            # WHIP: no token (401), another room's token (403), a second anchor (409)
            await refused("whip", 401, "POST", f"/whip/{ROOM}", data="v=0", headers=sdp)
            await refused("whip", 403, "POST", f"/whip/{ROOM}", data="v=0", headers={
                **sdp, "Authorization": f"Bearer {token('elsewhere', 'a', 'publish')}"})
            with pytest.raises(SignalingError) as second:
                await publish(url, ROOM, token(ROOM, "anchor2", "publish"), PaintedVideoTrack(),
                              None)
            assert (second.value.status, second.value.code) == (409, "publisher_exists")
            expected[("whip", "publisher_exists")] = 1
            # WHEP: not SDP (415), malformed SDP (400), a resource that does not exist (404)
            await refused("whep", 415, "POST", f"/whep/{ROOM}", data="v=0", headers=bearer)
            await refused("whep", 400, "POST", f"/whep/{ROOM}", data="garbage",
                          headers={**bearer, **sdp})
            await refused("whep", 404, "DELETE", f"/whep/{ROOM}/{'0' * 32}", headers=bearer)
            # HTTP-FLV: a plain token without --flv-plain-token (401), a bad room name (400)
            plain = token(ROOM, "fan", "subscribe")
            await refused("flv", 401, "GET", f"/live/{ROOM}.flv?token={plain}")
            await refused("flv", 400, "GET", f"/live/{'x' * 200}.flv?token={plain}")
            # REST: a body over the cap (413), a room that does not exist (404)
            admin = {"Authorization": f"Bearer {token(ROOM, 'mod', 'admin')}"}
            await refused("rest", 413, "POST", f"/api/v1/rooms/{ROOM}/products",
                          data=b"{" + b" " * (MAX_BODY_BYTES + 10) + b"}",
                          headers={**admin, "Content-Type": "application/json"})
            await refused("rest", 404, "GET", "/api/v1/rooms/nope", headers={
                "Authorization": f"Bearer {token('nope', 'mod', 'admin')}"})
            await refused("rest", 401, "GET", f"/api/v1/rooms/{ROOM}")
            # /ws/events: another room's token (403), then reconnects past the burst (429)
            await refused("ws_events", 403, "GET", f"/ws/events/{ROOM}?token="
                          + token("elsewhere", "fan", "subscribe"))
            for _ in range(12):
                try:
                    async with http.ws_connect(
                            f"{url}/ws/events/{ROOM}?after_seq=1&token={plain}"):
                        pass
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 429
                    expected[("ws_events", "resume_limited")] = 1
                    break
            assert expected.get(("ws_events", "resume_limited")) == 1, "never limited"
            # /ws: no token at the upgrade (401); inside the socket, a join of another room
            await refused("ws", 401, "GET", "/ws")
            async with http.ws_connect(f"{url}/ws?token={plain}") as ws:
                await ws.send_bytes(msgpack.packb({"type": "join", "room": "elsewhere"}))
                reply = msgpack.unpackb(await asyncio.wait_for(ws.receive_bytes(), 5))
                assert (reply["type"], reply["code"]) == ("error", "wrong_room")
            expected[("ws", "wrong_room")] = 1
            # RTMP: a publish with a forged token, refused with onStatus
            client = await RawClient.open(server.config.rtmp_port)
            try:
                status = await client.connect_and_publish(f"{ROOM}?token=forged")
                assert status[3]["level"] == "error"  # type: ignore[index]
            finally:
                client.close()
            expected[("rtmp", "invalid_token")] = 1
            # ... and a player, which this server refuses before any publish
            client = await RawClient.open(server.config.rtmp_port)
            try:
                await client.handshake()
                client.command("connect", {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
                await client.reply("_result")
                client.command("play", None, ROOM, stream_id=1)
                assert await client.closed_by_server()
            finally:
                client.close()
            expected[("rtmp", "play_refused")] = 1

            after = await counts(http, server)
            for key, n in expected.items():
                assert after.get(key, 0) == before.get(key, 0) + n, (key, before, after)
            # what succeeded counted nothing: the anchor's WHIP, the ws upgrade, /metrics
            assert not any(door == "metrics" for door, _ in after)
            assert after.get(("whip", "http_201"), 0) == 0
            async with http.get(f"{url}/live/{ROOM}.flv", headers=bearer) as flv:
                assert flv.status == 200  # the FLV door still serves
    finally:
        await anchor.close()
