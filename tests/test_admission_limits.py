"""The node's admission limits (issue 14, defect 2): an offer carries no more media sections
than the room's slots need, one identity or one address holds a bounded number of sessions,
and answered-but-unconnected sessions are bounded per identity and per node.

Each test plays the attack (a 300-section offer, a 9th session, a 5th pending offer) against
the real app on loopback and checks the refusal (400 / 429 + ``Retry-After``, JSON), that no
state stays behind, and that a legitimate client beside it still gets in. The limits live in
the node's memory, not in a store, so there is no backend to vary.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu import peer
from sfu.admission import Admission
from sfu.errors import TooManySections
from sfu.node import NODE_KEY
from sfu.offer import max_sections, parse_offer
from sfu.settings import NodeSettings
from shopcast.config import Config

pytestmark = pytest.mark.slow

SDP = {"Content-Type": "application/sdp"}
FINGERPRINT = ":".join(["AB"] * 32)
H264 = "packetization-mode=1;profile-level-id=42e01f"


@pytest.fixture
def config(tmp_path: Path, request: pytest.FixtureRequest) -> Config:
    """Viewers in this process unless the param says otherwise; limits from the param."""
    return loopback_config(tmp_path, **{"workers": 0, **getattr(request, "param", {})})


def crafted_offer(sections: int, direction: str = "recvonly") -> str:
    """A well-formed offer with ``sections`` small media sections (about 140 bytes each; ICE
    and DTLS at session level, as RFC 8839 and 8122 allow)."""
    mids = " ".join(str(i) for i in range(sections))
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {mids}",
             "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuv",
             f"a=fingerprint:sha-256 {FINGERPRINT}", "a=setup:actpass"]
    for i in range(sections):
        kind, rtpmap = ("video", "96 H264/90000") if i % 2 == 0 else ("audio", "111 opus/48000/2")
        lines += [
            f"m={kind} 9 UDP/TLS/RTP/SAVPF {rtpmap.split()[0]}", "c=IN IP4 0.0.0.0",
            f"a=mid:{i}", f"a={direction}", f"a=rtpmap:{rtpmap}", "a=rtcp-mux",
        ]
        if kind == "video":
            lines.append(f"a=fmtp:96 {H264}")
    return "\r\n".join(lines) + "\r\n"


async def post(url: str, body: str, token: str, **extra: str
               ) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}", **SDP, **extra}
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        payload = await (r.json() if r.content_type == "application/json" else r.text())
        return r.status, payload, dict(r.headers)


async def metric(server: Any, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def live_room(server: Any, room: str) -> Any:
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    node = server.app[NODE_KEY]
    await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "anchor live")
    await wait_for(lambda: node.admission.pending() == 0, 10, "anchor counted as connected")
    return anchor


def test_the_section_cap_is_the_rooms_slots_plus_a_data_channel() -> None:
    limit = max_sections(4)
    assert limit == 9
    parse_offer(crafted_offer(limit), want="recv", section_limit=limit)  # a full room: fine
    offer = crafted_offer(300)
    assert 30_000 < len(offer) < 64 * 1024  # under the byte cap: only the count refuses it
    parse_offer(offer, want="recv")  # well formed: without the cap aiortc would take it
    with pytest.raises(TooManySections):
        parse_offer(offer, want="recv", section_limit=limit)


def test_a_limit_of_zero_is_no_limit() -> None:
    """A load test from one machine lifts the per-address and pending limits with 0."""
    admission = Admission(NodeSettings(max_sessions_per_address=0, max_pending_sessions=0,
                                       max_pending_per_identity=0, max_sessions_per_identity=0))
    for i in range(300):
        admission.admit("r", f"v{i % 3}", "127.0.0.1", "whep")
    assert (admission.admitted(), admission.pending(), sum(admission.refused.values())) == (
        300, 300, 0)


async def test_a_300_section_offer_is_refused_before_any_session(server: Any) -> None:
    anchor = await live_room(server, "big")
    node = server.app[NODE_KEY]
    try:
        before = (set(node.sessions), node.admission.admitted())
        for kind, direction, grant in (("whep", "recvonly", "subscribe"),
                                       ("whip", "sendonly", "publish")):
            started = time.monotonic()
            status, body, headers = await post(f"{server.url}/{kind}/big",
                                               crafted_offer(300, direction),
                                               server.token("big", "greedy", grant))
            assert (status, body["error"]["code"]) == (400, "too_many_sections"), body
            assert headers["Content-Type"].startswith("application/json")
            assert time.monotonic() - started < 1.0  # no aiortc parse (0.4 s each in the audit)
            assert (set(node.sessions), node.admission.admitted()) == before
        status, answer, _ = await post(f"{server.url}/whep/big", crafted_offer(2),
                                       server.token("big", "fan", "subscribe"))
        assert status == 201, answer  # a legitimate offer beside it still gets in
    finally:
        await anchor.close()


@pytest.mark.parametrize("config", [{"max_pending_per_identity": 100}], indirect=True)
async def test_the_ninth_session_of_an_identity_is_429_and_others_still_get_in(
    server: Any,
) -> None:
    anchor = await live_room(server, "shop")
    node = server.app[NODE_KEY]
    greedy = server.token("shop", "greedy", "subscribe")
    try:
        locations = []
        for _ in range(8):
            status, answer, headers = await post(f"{server.url}/whep/shop", crafted_offer(2),
                                                 greedy)
            assert status == 201, answer
            locations.append(headers["Location"])
        status, body, headers = await post(f"{server.url}/whep/shop", crafted_offer(2), greedy)
        assert (status, body["error"]["code"]) == (429, "too_many_sessions"), body
        assert int(headers["Retry-After"]) > 0
        assert sum(1 for s in node.sessions.values() if s.identity == "greedy") == 8
        status, answer, _ = await post(f"{server.url}/whep/shop", crafted_offer(2),
                                       server.token("shop", "fan", "subscribe"))
        assert status == 201, answer
        assert await metric(
            server, 'shopcast_session_refusals_total{door="whep",reason="sessions_per_identity"}'
        ) == 1
        async with aiohttp.ClientSession() as http:  # ending one frees its place
            async with http.delete(f"{server.url}{locations[0]}",
                                   headers={"Authorization": f"Bearer {greedy}"}) as r:
                assert r.status == 204
        status, answer, _ = await post(f"{server.url}/whep/shop", crafted_offer(2), greedy)
        assert status == 201, answer
    finally:
        await anchor.close()


@pytest.mark.parametrize("config", [{"max_sessions_per_address": 3,
                                     "max_pending_per_identity": 100}], indirect=True)
async def test_sessions_per_client_address_are_bounded(server: Any) -> None:
    anchor = await live_room(server, "addr")  # the anchor's own session is one of the 3
    try:
        for i in range(2):
            status, answer, _ = await post(f"{server.url}/whep/addr", crafted_offer(2),
                                           server.token("addr", f"v{i}", "subscribe"))
            assert status == 201, answer
        status, body, headers = await post(f"{server.url}/whep/addr", crafted_offer(2),
                                           server.token("addr", "v9", "subscribe"))
        assert (status, body["error"]["code"]) == (429, "too_many_sessions"), body
        assert "Retry-After" in headers
        assert await metric(
            server, 'shopcast_session_refusals_total{door="whep",reason="sessions_per_address"}'
        ) == 1
    finally:
        await anchor.close()


async def test_pending_sessions_are_capped_and_freed_by_connect_and_timeout(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer, "CONNECT_TIMEOUT_S", 2.0)
    anchor = await live_room(server, "pend")
    node = server.app[NODE_KEY]
    token = server.token("pend", "v", "subscribe")
    viewers = []
    try:
        for _ in range(5):  # a connected session is not pending: 5 get in past the cap of 4
            viewers.append(await play(server.url, "pend", token, decode=False))
            await wait_for(lambda: node.admission.pending() == 0, 10, "viewer connected")
        for _ in range(2):
            await viewers.pop().close()
        await wait_for(lambda: len(node.sessions) == 4, 5, "two viewers gone")
        for _ in range(4):  # 3 connected + 4 pending: under the identity's 8 sessions
            status, answer, _ = await post(f"{server.url}/whep/pend", crafted_offer(2), token)
            assert status == 201, answer
        status, body, headers = await post(f"{server.url}/whep/pend", crafted_offer(2), token)
        assert (status, body["error"]["code"]) == (429, "too_many_pending"), body
        assert int(headers["Retry-After"]) > 0
        assert node.admission.pending() == 4
        status, answer, _ = await post(f"{server.url}/whep/pend", crafted_offer(2),
                                       server.token("pend", "other", "subscribe"))
        assert status == 201, answer  # another identity is not held up
        await wait_for(lambda: len(node.sessions) == 4, 6, "pending sessions timed out")
        assert node.admission.pending() == 0  # the anchor and three connected viewers remain
        status, answer, _ = await post(f"{server.url}/whep/pend", crafted_offer(2), token)
        assert status == 201, answer
        assert await metric(
            server, 'shopcast_session_refusals_total{door="whep",reason="pending_per_identity"}'
        ) == 1
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


@pytest.mark.parametrize("config", [{"max_pending_sessions": 3}], indirect=True)
async def test_pending_sessions_of_the_node_are_capped(server: Any) -> None:
    anchor = await live_room(server, "node")
    try:
        for i in range(3):
            status, answer, _ = await post(f"{server.url}/whep/node", crafted_offer(2),
                                           server.token("node", f"v{i}", "subscribe"))
            assert status == 201, answer
        status, body, headers = await post(f"{server.url}/whep/node", crafted_offer(2),
                                           server.token("node", "late", "subscribe"))
        assert (status, body["error"]["code"]) == (429, "too_many_pending"), body
        assert "Retry-After" in headers
        assert server.app[NODE_KEY].admission.pending() == 3
    finally:
        await anchor.close()


@pytest.mark.parametrize("config", [{"max_sessions_per_address": 4}], indirect=True)
async def test_the_ws_door_applies_the_same_limits_with_the_sockets_address(server: Any) -> None:
    anchor = await live_room(server, "sock")  # the address's first session
    token = server.token("sock", "w", "subscribe")
    async with aiohttp.ClientSession() as http, http.ws_connect(
        f"{server.url}/ws?token={token}"
    ) as ws:

        async def request(**message: Any) -> dict[str, Any]:
            await ws.send_bytes(msgpack.packb(message, use_bin_type=True))
            for _ in range(20):  # skip room events; the reply carries our cid
                reply = await asyncio.wait_for(ws.receive(), 15)
                data: dict[str, Any] = msgpack.unpackb(reply.data, raw=False)
                if data.get("cid") == message.get("cid"):
                    return data
            raise AssertionError(f"no reply to {message['type']}")

        assert (await request(type="join", room="sock", cid="j"))["type"] == "joined"
        reply = await request(type="subscribe", sdp=crafted_offer(300), cid="big")
        assert (reply["type"], reply["code"]) == ("error", "too_many_sections"), reply
        for i in range(3):  # pending 3 < the identity's 4: only the address limit is reached
            reply = await request(type="subscribe", sdp=crafted_offer(2), cid=f"p{i}")
            assert reply["type"] == "answer", reply
        reply = await request(type="subscribe", sdp=crafted_offer(2), cid="p3")
        assert (reply["type"], reply["code"]) == ("error", "too_many_sessions"), reply
    assert await metric(
        server, 'shopcast_session_refusals_total{door="whep",reason="sessions_per_address"}'
    ) == 1
    await anchor.close()


@pytest.mark.parametrize("config", [{"workers": 1, "max_pending_per_identity": 100}],
                         indirect=True)
async def test_viewers_in_a_worker_count_and_free_their_places(server: Any) -> None:
    anchor = await live_room(server, "wk")
    node = server.app[NODE_KEY]
    greedy = server.token("wk", "greedy", "subscribe")
    viewer = await play(server.url, "wk", server.token("wk", "fan", "subscribe"), decode=False)
    try:  # the worker says when its leg connected: not pending until the 20 s timeout
        await wait_for(lambda: node.admission.pending() == 0, 10, "the worker's viewer connected")
        locations = []
        for _ in range(8):
            status, answer, headers = await post(f"{server.url}/whep/wk", crafted_offer(2),
                                                 greedy)
            assert status == 201, answer
            locations.append(headers["Location"])
        status, body, headers = await post(f"{server.url}/whep/wk", crafted_offer(2), greedy)
        assert (status, body["error"]["code"]) == (429, "too_many_sessions"), body
        assert "Retry-After" in headers
        async with aiohttp.ClientSession() as http:  # the worker's leg_closed frees the place
            async with http.delete(f"{server.url}{locations[0]}",
                                   headers={"Authorization": f"Bearer {greedy}"}) as r:
                assert r.status == 204
        await wait_for(lambda: node.admission.admitted() == 9, 5, "the place freed")
        status, answer, _ = await post(f"{server.url}/whep/wk", crafted_offer(2), greedy)
        assert status == 201, answer
    finally:
        await viewer.close()
        await anchor.close()


@pytest.mark.parametrize("config", [
    {"max_sessions_per_address": 2, "max_pending_per_identity": 100},
    {"max_sessions_per_address": 2, "max_pending_per_identity": 100, "trusted_proxies": []},
], indirect=True, ids=["loopback-front-door-trusted", "nobody-trusted"])
async def test_a_trusted_front_door_forwards_the_clients_address(server: Any) -> None:
    """The front door forwards WHIP/WHEP with ``X-Forwarded-For``: behind a trusted one each
    client counts on its own; from anyone else the header is ignored (no spoofed way out)."""
    anchor = await live_room(server, "fwd")  # 127.0.0.1's first session
    trusted = bool(server.config.trusted_proxies)
    token = server.token("fwd", "v", "subscribe")
    url = f"{server.url}/whep/fwd"
    try:
        results = [(await post(url, crafted_offer(2), token, **{"X-Forwarded-For": "10.0.0.1"}))[0]
                   for _ in range(3)]
        other, _, _ = await post(url, crafted_offer(2), token,
                                 **{"X-Forwarded-For": "10.0.0.9, 10.0.0.2"})
        if trusted:  # 10.0.0.1 holds two, its third is refused; 10.0.0.2 is someone else
            assert (results, other) == ([201, 201, 429], 201)
        else:  # every request is 127.0.0.1's, which holds the anchor's session already
            assert (results, other) == ([201, 429, 429], 429)
    finally:
        await anchor.close()
