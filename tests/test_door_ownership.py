"""Who may end a session, who may enter at the media doors, and what ``/metrics`` tells.

The attacks of the hardening issue, on real aiortc peers against the whole app, on both store
backends: an uninvited co-host or a second publish token DELETEs the anchor's WHIP resource
(``403 not_owner``, the anchor keeps streaming to its viewers); the owner and an admin of the
room may end a session (``204``); ``/metrics`` names no session id and no identity, and is closed
by ``--metrics-token``; a banned identity is refused at WHIP, WHEP and HTTP-FLV (``403 banned``)
and its open WHEP session ends with the ban.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from flv_helpers import start_anchor
from rest_helpers import forge_token
from waiting import wait_for

from loadtest.clients import SignalingError, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.app import CONFIG_KEY
from shopcast.cluster import signaling_metrics
from shopcast.config import Config
from signaling.errors import ApiError

pytest_plugins = ["store_fixtures"]
pytestmark = pytest.mark.slow

METRICS_TOKEN = "metrics-token-for-the-scraper-0123456789"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


def resource(server: Any, peer: Any) -> str:
    assert peer.resource_url is not None
    return str(urljoin(server.url, peer.resource_url))


async def delete(url: str, token: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.delete(
            url, headers={"Authorization": f"Bearer {token}"}) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def metrics(server: Any) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        return await response.text()


async def packets_flow(viewer: Any) -> bool:
    """More video packets reach ``viewer`` within half a second."""
    before = viewer.video.stream.packets
    await asyncio.sleep(0.5)
    return bool(viewer.video.stream.packets > before)


async def test_only_the_owner_or_an_admin_ends_a_session(server: Any) -> None:
    node = server.app[NODE_KEY]
    anchor = await start_anchor(server, "own1")
    viewer = await play(server.url, "own1", server.token("own1", "v1", "subscribe"),
                        decode=False)
    other = await play(server.url, "own1", server.token("own1", "v2", "subscribe"),
                       decode=False)
    try:
        assert await viewer.wait_connected() and await other.wait_connected()
        anchor_url, anchor_id = resource(server, anchor), resource(server, anchor).rsplit("/")[-1]
        outsiders = [server.token("own1", "intruder", "publish"),  # a second publish token
                     server.token("own1", "guest", "cohost", "subscribe"),  # uninvited co-host
                     server.token("own1", "someone", "publish", "cohost")]  # both, no admin
        for token in outsiders:
            status, body = await delete(anchor_url, token)
            assert (status, body["error"]["code"]) == (403, "not_owner"), body
        anywhere = forge_token(server.config.secret, "*", "someone", "publish", "cohost")
        status, body = await delete(anchor_url, anywhere)  # '*' without admin: not a token
        assert (status, body["error"]["code"]) == (401, "invalid_token"), body
        status, body = await delete(resource(server, viewer),
                                    server.token("own1", "v2", "subscribe"))
        assert (status, body["error"]["code"]) == (403, "not_owner"), "a viewer ends another"
        status, body = await delete(anchor_url, server.token("other", "mod", "admin"))
        assert (status, body["error"]["code"]) == (403, "wrong_room"), "another room's admin"

        assert anchor_id in node.sessions and node.rooms["own1"].live
        assert anchor.pc.connectionState == "connected"
        assert await packets_flow(viewer), "the anchor keeps streaming to its viewers"

        status, _ = await delete(resource(server, viewer), server.token("own1", "v1",
                                                                        "subscribe"))
        assert status == 204, "the owner ends its own session"
        assert resource(server, viewer).rsplit("/")[-1] not in node.sessions
        status, _ = await delete(anchor_url, server.token("own1", "mod", "admin"))
        assert status == 204, "an admin of the room ends the anchor's session"
        assert anchor_id not in node.sessions
        text = await metrics(server)
        assert 'shopcast_door_refusals_total{door="whip",reason="not_owner"} 3' in text
        assert 'shopcast_door_refusals_total{door="whep",reason="not_owner"} 1' in text
        assert 'shopcast_door_refusals_total{door="whip",reason="wrong_room"} 1' in text
    finally:
        await other.close()
        await viewer.close()
        await anchor.close()


async def test_metrics_carry_no_session_id_nor_identity(server: Any) -> None:
    anchor = await publish(server.url, "met1", server.token("met1", "anchor-q7x", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    node = server.app[NODE_KEY]
    viewer = None
    try:
        await wait_for(lambda: "met1" in node.rooms and node.rooms["met1"].live, 10, "live")
        viewer = await play(server.url, "met1", server.token("met1", "viewer-k2z", "subscribe"),
                            decode=False)
        assert await viewer.wait_connected()
        async with aiohttp.ClientSession() as http, http.get(
                f"{server.url}/metrics") as response:
            assert response.status == 200, "open by default"
            text = await response.text()
        ids = [session.id for session in node.sessions.values()]
        assert len(ids) == 2
        for secret in [*ids, "anchor-q7x", "viewer-k2z"]:
            assert secret not in text, f"{secret!r} is on /metrics"
        assert 'shopcast_track_packets_total{room="met1",kind="video",slot="0"}' in text
    finally:
        if viewer is not None:
            await viewer.close()
        await anchor.close()


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_metrics_token_closes_metrics(config: Config, server: Any) -> None:
    config.metrics_token = METRICS_TOKEN  # read per request, like every scrape
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"},
                        {"Authorization": f"Basic {METRICS_TOKEN}"},
                        {"Authorization": f"Bearer {METRICS_TOKEN}x"}):
            async with http.get(f"{server.url}/metrics", headers=headers) as response:
                assert response.status == 401, headers
                body = await response.json()
                assert body["error"]["code"] == "metrics_unauthorized"
        async with http.get(f"{server.url}/metrics",
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"}) as response:
            assert response.status == 200
            assert "shopcast_rooms" in await response.text()
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200, "health checks stay open"

    # ``shopcast signaling``'s /metrics: refused before anything is read
    request = make_mocked_request("GET", "/metrics", app=server.app)
    with pytest.raises(ApiError) as refused:
        await signaling_metrics(request)
    assert (refused.value.status, refused.value.code) == (401, "metrics_unauthorized")
    assert server.app[CONFIG_KEY].metrics_token == METRICS_TOKEN


async def test_a_banned_identity_is_refused_at_whip_whep_and_flv(server: Any) -> None:
    node = server.app[NODE_KEY]
    admin = server.token("ban1", "mod", "admin")
    anchor = await start_anchor(server, "ban1")
    troll = await play(server.url, "ban1", server.token("ban1", "troll", "subscribe"),
                       decode=False)
    fan = await play(server.url, "ban1", server.token("ban1", "fan", "subscribe"),
                     decode=False)
    try:
        assert await troll.wait_connected() and await fan.wait_connected()
        troll_id = resource(server, troll).rsplit("/")[-1]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{server.url}/api/v1/rooms/ban1/chat/ban",
                                 json={"identity": "troll"},
                                 headers={"Authorization": f"Bearer {admin}"}) as response:
                assert response.status == 200
            await wait_for(lambda: troll_id not in node.sessions, 10,
                           "the banned viewer's WHEP session ended")

            with pytest.raises(SignalingError) as refused:
                await play(server.url, "ban1", server.token("ban1", "troll", "subscribe"),
                           decode=False)
            assert (refused.value.status, refused.value.code) == (403, "banned")
            with pytest.raises(SignalingError) as refused:
                await publish(server.url, "ban1",
                              server.token("ban1", "troll", "publish", "cohost"),
                              PaintedVideoTrack(), None)
            assert (refused.value.status, refused.value.code) == (403, "banned")
            async with http.get(server.flv_url("ban1", "troll")) as response:
                assert response.status == 403
                assert (await response.json())["error"]["code"] == "banned"
            async with http.get(server.flv_url("ban1", "fan")) as response:
                assert response.status == 200, "others still play FLV"
                assert await response.content.read(3) == b"FLV"

        assert not [s for s in node.sessions.values() if s.identity == "troll"], \
            "nothing of the banned identity is left on the node"
        text = await metrics(server)
        for door in ("whip", "whep", "flv"):
            assert f'shopcast_door_refusals_total{{door="{door}",reason="banned"}} 1' in text
        assert await packets_flow(fan), "the other viewer keeps playing"
        assert node.rooms["ban1"].live
    finally:
        await fan.close()
        await troll.close()
        await anchor.close()
