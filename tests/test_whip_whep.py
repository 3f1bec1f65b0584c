"""WHIP/WHEP HTTP contract: status codes, JSON errors, CORS, resources, no partial state."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from sfu.node import NODE_KEY

SDP = {"Content-Type": "application/sdp"}


async def make_offer(direction: str, kinds: tuple[str, ...] = ("video", "audio")) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **SDP}


async def post(
    url: str, body: str, headers: dict[str, str]
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        payload = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, payload, r


async def test_whip_created_with_location_and_sdp_answer(server: Any) -> None:
    offer = await make_offer("sendonly")
    status, answer, response = await post(
        f"{server.url}/whip/shop1", offer, auth(server.token("shop1", "anchor", "publish"))
    )
    assert status == 201, answer
    assert response.headers["Location"].startswith("/whip/shop1/")
    assert response.content_type == "application/sdp"
    assert "a=setup:passive" in answer  # we are the DTLS server
    video = answer.split("m=video")[1].split("m=audio")[0]
    assert video.count("H264/90000") == 1  # exactly one video codec, H.264


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": "Basic abc"}, 401, "missing_token"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "invalid_token"),
    ],
)
async def test_whip_rejects_missing_or_bad_tokens(
    server: Any, headers: dict[str, str], status: int, code: str
) -> None:
    offer = await make_offer("sendonly")
    got, body, _ = await post(f"{server.url}/whip/shop1", offer, {**headers, **SDP})
    assert (got, body["error"]["code"]) == (status, code)


async def test_grant_and_room_are_checked(server: Any) -> None:
    offer = await make_offer("sendonly")
    got, body, _ = await post(
        f"{server.url}/whip/shop1", offer, auth(server.token("shop1", "v", "subscribe"))
    )
    assert (got, body["error"]["code"]) == (403, "missing_grant")
    got, body, _ = await post(
        f"{server.url}/whip/shop1", offer, auth(server.token("other", "a", "publish"))
    )
    assert (got, body["error"]["code"]) == (403, "wrong_room")


async def test_wrong_content_type_is_415(server: Any) -> None:
    token = server.token("shop1", "anchor", "publish")
    got, body, _ = await post(
        f"{server.url}/whip/shop1", "v=0", {"Authorization": f"Bearer {token}",
                                            "Content-Type": "text/plain"}
    )
    assert (got, body["error"]["code"]) == (415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    ["", "hello", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", "v=0\r\n\x00\x01garbage"],
)
async def test_malformed_sdp_is_400_and_leaves_nothing_behind(server: Any, body: str) -> None:
    token = server.token("shop1", "anchor", "publish")
    got, payload, _ = await post(f"{server.url}/whip/shop1", body, auth(token))
    assert got == 400
    assert payload["error"]["code"] in ("malformed_sdp", "no_media", "negotiation_failed")
    node = server.app[NODE_KEY]
    assert node.sessions == {} and node.rooms == {}


async def test_offer_direction_must_match_the_endpoint(server: Any) -> None:
    recv_offer = await make_offer("recvonly")
    got, body, _ = await post(
        f"{server.url}/whip/shop1", recv_offer, auth(server.token("shop1", "a", "publish"))
    )
    assert (got, body["error"]["code"]) == (400, "wrong_direction")


async def test_second_publisher_is_409_and_whep_before_live_is_404(server: Any) -> None:
    got, body, _ = await post(
        f"{server.url}/whep/shop1", await make_offer("recvonly"),
        auth(server.token("shop1", "v", "subscribe")),
    )
    assert (got, body["error"]["code"]) == (404, "not_live")
    token = server.token("shop1", "anchor", "publish")
    got, _, _ = await post(f"{server.url}/whip/shop1", await make_offer("sendonly"), auth(token))
    assert got == 201
    got, body, _ = await post(f"{server.url}/whip/shop1", await make_offer("sendonly"), auth(token))
    assert (got, body["error"]["code"]) == (409, "publisher_exists")
    assert len(server.app[NODE_KEY].sessions) == 1


async def test_delete_ends_the_session_and_unknown_resources_are_404(server: Any) -> None:
    token = server.token("shop1", "anchor", "publish")
    offer = await make_offer("sendonly")
    _, _, response = await post(f"{server.url}/whip/shop1", offer, auth(token))
    location = response.headers["Location"]
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.delete(server.url + location, headers=headers) as r:
            assert r.status == 204
        async with http.delete(server.url + location, headers=headers) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "not_found"
        async with http.delete(server.url + location) as r:
            assert r.status == 401
    assert server.app[NODE_KEY].sessions == {}


async def test_cors_preflight_and_headers(server: Any) -> None:
    origin = {"Origin": "http://shop.example", "Access-Control-Request-Method": "POST"}
    async with aiohttp.ClientSession() as http:
        async with http.options(f"{server.url}/whip/shop1", headers=origin) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://shop.example"
            assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
            assert r.headers["Accept-Post"] == "application/sdp"
        async with http.post(
            f"{server.url}/whep/shop1", data="x", headers={**SDP, "Origin": "http://a.example"}
        ) as r:
            assert r.status == 401
            assert r.headers["Access-Control-Allow-Origin"] == "http://a.example"
            assert "Location" in r.headers["Access-Control-Expose-Headers"]


async def test_trickle_patch_is_405(server: Any) -> None:
    token = server.token("shop1", "anchor", "publish")
    async with aiohttp.ClientSession() as http, http.patch(
        f"{server.url}/whip/shop1/abc", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        assert r.status == 405


async def test_bad_room_name_is_400(server: Any) -> None:
    got, body, _ = await post(
        f"{server.url}/whip/{'x' * 80}", await make_offer("sendonly"),
        auth(server.token("*", "admin", "admin")),
    )
    assert (got, body["error"]["code"]) == (400, "bad_room")
