"""A bounded fuzz pass over every door of a running app (issue 14, "fuzz pass in CI").

Random and mutated SDP at WHIP and WHEP, JSON bodies and paths at the REST API, FLV URLs and
queries, msgpack and raw frames at ``/ws`` and ``/ws/events``, client events through the event
gateway's ``handle()`` (what the data channel calls), and raw bytes at the RTMP port. Every run
is deterministic (``random.Random(seed)``) and bounded by a count and by time. What must hold:
no HTTP answer is a 5xx, every 4xx is JSON without traceback text, a WebSocket answers with an
error or closes cleanly (never 1006/1011), nothing is left behind (no session, no room on the
node), the process grew by less than ``RSS_BOUND`` and the server still serves a real WHIP
publish and WHEP play, ``/healthz`` and a REST call afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp
import msgpack
import pytest
from conftest import Server, free_port, loopback_config
from fuzz_inputs import json_body, mutate, packed, real_offer, rtmp_messages, sdp_offer, value
from rest_helpers import forge_token, signaling_of
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.config import Config
from signaling.live.schema import MAX_EVENT_BYTES
from signaling.live.websocket import MAX_FRAME
from signaling.negotiation import MAX_SDP_BYTES
from signaling.tokens import Claims, Grant

pytest_plugins = ["store_fixtures"]
pytestmark = pytest.mark.slow

SEED = int(os.environ.get("FUZZ_SEED", "1414"))  # CI runs the fixed seed; others explore
RSS_BOUND = 64 * 1024 * 1024
FUZZ_S = 2.0  # time each fuzz loop may take; the counts below usually end it first
BAD_CLOSE_CODES = {1006, 1011}  # abnormal closure, internal error: a door broke
ROOM = "fz1"
SMALLEST_FRAME_CAP = min(MAX_FRAME, MAX_SDP_BYTES + 4 * MAX_EVENT_BYTES)  # /ws/events, /ws
STATUSES: dict[str, int] = {}  # what the doors answered, printed with -s for a look at coverage


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A door that breaks logs an error (aiohttp's "Error handling request", a task's
    traceback) even when the client sees a tidy close: none may appear."""
    caplog.set_level(logging.ERROR)
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors][:5]


@pytest.fixture
def config(tmp_path: Path, backend: str, prefix: str) -> Config:
    # ws_resume_s=1: legs a /ws socket opened outlive it that long by design, then must end
    # and rtmp_grace_ms=200: an RTMP publisher's session waits that long for its encoder
    return loopback_config(tmp_path, workers=0, rtmp_port=free_port(), redis=backend,
                           redis_prefix=prefix, ws_resume_s=1, rtmp_grace_ms=200)


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Budget:
    """A count and a time bound for one fuzz loop."""

    def __init__(self, count: int, seconds: float = FUZZ_S) -> None:
        self.count, self.deadline = count, time.monotonic() + seconds

    def __iter__(self) -> Any:
        for i in range(self.count):
            if time.monotonic() > self.deadline:
                return
            yield i


# --- checks ---------------------------------------------------------------------------------


def tally(key: str) -> None:
    STATUSES[key] = STATUSES.get(key, 0) + 1


def check_answer(what: str, status: int, content_type: str, body: bytes) -> None:
    assert status < 500, f"{what}: {status} {body[:300]!r}"
    assert b"Traceback" not in body, f"{what}: traceback in the answer"
    if 400 <= status < 500:
        assert content_type == "application/json", f"{what}: {status} {content_type} {body[:200]!r}"
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str), f"{what}: {body[:200]!r}"


async def request(http: aiohttp.ClientSession, what: str, method: str, url: str,
                  body: bytes | None = None, headers: dict[str, str] | None = None,
                  created: list[str] | None = None) -> int:
    async with http.request(method, url, data=body, headers=headers or {},
                            allow_redirects=False) as response:
        if response.status == 200 and response.content_type == "video/x-flv":
            return 200  # a real stream: the door worked, do not read it forever
        raw = await response.read()
        tally(f"{what} {response.status}")
        if method == "HEAD":
            assert response.status < 500, f"{what} HEAD {url[:120]}: {response.status}"
            return response.status
        check_answer(f"{what} {method} {url[:120]}", response.status, response.content_type, raw)
        if response.status == 201 and created is not None and "Location" in response.headers:
            created.append(response.headers["Location"])
        return response.status


async def still_serves(server: Server, rss_before: int) -> None:
    """``/healthz``, a REST call, a real publish and play; nothing left; RSS bounded."""
    node = server.app[NODE_KEY]
    await wait_for(lambda: not node.sessions, 10, "no session left behind by the fuzz")
    assert not [r for r in node.rooms.values() if r.live], "no live room left behind"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200, await response.text()
        token = server.token(ROOM, "boss", "admin")
        async with http.get(f"{server.url}/api/v1/rooms/{ROOM}/products",
                            headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status in (200, 404), await response.text()
    grown = rss() - rss_before
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB"


async def publish_and_play(server: Server, room: str) -> None:
    node = server.app[NODE_KEY]
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    viewer = None
    try:
        await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "publisher live")
        viewer = await play(server.url, room, server.token(room, "viewer", "subscribe"),
                            decode=False)
        assert await viewer.wait_connected()
        await wait_for(lambda: viewer is not None and viewer.video.stream.packets > 10, 10,
                       "video reaches the viewer after the fuzz")
    finally:
        if viewer is not None:
            await viewer.close()
        await anchor.close()
    await wait_for(lambda: not node.sessions, 10, "the publish and play sessions end")
    tally("publish and play after the fuzz")


def tokens(server: Server, rng: random.Random, grant: str) -> Callable[[], str]:
    good = server.token(ROOM, "fuzzer", grant)
    anywhere = (server.token("*", "fuzzer", grant) if grant == "admin"  # '*' is admin-only
                else forge_token(server.config.secret, "*", "fuzzer", grant))
    choices = [good, good, good, anywhere,
               server.token(ROOM, "fuzzer", "chat"), good[:-3] + "abc", "x" * 5000, ""]
    return lambda: rng.choice(choices)


# --- the doors ------------------------------------------------------------------------------


async def test_fuzz_whip_whep_sdp(server: Server) -> None:
    rng = random.Random(SEED)
    base = await real_offer()
    before = rss()
    created: list[str] = []
    whip, whep = tokens(server, rng, "publish"), tokens(server, rng, "subscribe")
    async with aiohttp.ClientSession() as http:
        for i in Budget(600, 2 * FUZZ_S):
            door, token = ("whip", whip()) if i % 2 == 0 else ("whep", whep())
            room = ROOM if rng.random() < 0.9 else rng.choice(["", "a" * 300, "%00", "..", "*"])
            ctype = "application/sdp" if rng.random() < 0.9 else rng.choice(["text/plain", "x/y"])
            await request(http, door, "POST", f"{server.url}/{door}/{quote(room)}",
                          sdp_offer(rng, base), {"Authorization": f"Bearer {token}",
                                                 "Content-Type": ctype}, created)
        for _ in Budget(40):  # resources: random ids, methods and bodies
            door = rng.choice(["whip", "whep"])
            rid = rng.choice(["x", "0" * 64, "..%2f", "%ff"])
            await request(http, door, rng.choice(["DELETE", "PATCH"]),
                          f"{server.url}/{door}/{ROOM}/{rid}", mutate(rng, base.encode()),
                          {"Authorization": f"Bearer {whip()}",
                           "Content-Type": "application/trickle-ice-sdpfrag"})
        for location in created:  # what the fuzz did open, its owner closes
            door = "whip" if "/whip/" in location else "whep"
            token = server.token(ROOM, "fuzzer", "publish" if door == "whip" else "subscribe")
            await request(http, door, "DELETE", server.url + location if location.startswith("/")
                          else location, headers={"Authorization": f"Bearer {token}"})
    await still_serves(server, before)
    await publish_and_play(server, "fz2")


async def test_fuzz_whep_into_a_live_room(server: Server) -> None:
    """WHEP offers, real and mutated, while an anchor streams: the viewer path past the room
    lookup (codec matching, sections, admission); every session the fuzz opened is closed."""
    rng = random.Random(SEED + 6)
    base = await real_offer("recvonly")
    node = server.app[NODE_KEY]
    anchor = await publish(server.url, ROOM, server.token(ROOM, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    created: list[str] = []
    try:
        await wait_for(lambda: ROOM in node.rooms and node.rooms[ROOM].live, 10, "anchor live")
        before = rss()
        async with aiohttp.ClientSession() as http:
            for i in Budget(300, 2 * FUZZ_S):
                token = server.token(ROOM, f"viewer{i % 7}", "subscribe")
                body = base.encode() if rng.random() < 0.15 else sdp_offer(rng, base)
                await request(http, "whep", "POST", f"{server.url}/whep/{ROOM}", body,
                              {"Authorization": f"Bearer {token}",
                               "Content-Type": "application/sdp"}, created)
            for location in created:
                viewer = location.rstrip("/").split("/")[-1]
                await request(http, "whep", "DELETE", urljoin(server.url, location),
                              headers={"Authorization": "Bearer " + server.token(
                                  ROOM, "boss", "admin")})
                assert viewer not in node.sessions
        assert node.rooms[ROOM].live, "the anchor streams on through the fuzz"
    finally:
        await anchor.close()
    assert created, "some WHEP offers were answered: the fuzz reached the viewer path"
    await still_serves(server, before)


async def test_fuzz_rest_bodies_and_paths(server: Server) -> None:
    rng = random.Random(SEED + 1)
    before = rss()
    admin = server.token(ROOM, "boss", "admin")
    routes = [(r.method, r.resource.canonical) for r in server.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/v1")]
    choices = [admin, admin, server.token("*", "root", "admin"),
               server.token(ROOM, "v", "subscribe", "chat"), "junk", ""]
    async with aiohttp.ClientSession() as http:
        for _ in Budget(1500, 2 * FUZZ_S):
            method, path = rng.choice(routes)
            params = {"{room}": ROOM if rng.random() < 0.7 else str(value(rng, 6)),
                      "{identity}": str(value(rng, 6)), "{id}": str(value(rng, 6)),
                      "{node}": str(value(rng, 6))}
            for name, got in params.items():
                path = path.replace(name, quote(got[:400], safe=""))
            query = rng.choice(["", "?limit=-1", "?limit=99999999999999999999", "?cursor=%ff",
                                "?after=" + "9" * 50, "?limit=x&cursor=" + "a" * 2000])
            headers = {"Authorization": f"Bearer {rng.choice(choices)}",
                       "Content-Type": "application/json"}
            if rng.random() < 0.3:
                key = str(value(rng, 6))[:300]
                headers["Idempotency-Key"] = "".join(c if " " <= c < "\x7f" else "?" for c in key)
            await request(http, "rest", method, f"{server.url}{path}{query}",
                          json_body(rng) if method in ("POST", "PATCH") else None, headers)
    await still_serves(server, before)


async def test_fuzz_flv_urls_and_any_path(server: Server) -> None:
    rng = random.Random(SEED + 2)
    before = rss()
    token = tokens(server, rng, "subscribe")
    async with aiohttp.ClientSession() as http:
        for _ in Budget(400):
            room = rng.choice([ROOM, "", "a" * 500, "%ff%fe", "..%2F..", "fz1.flv", "x" * 65])
            query = rng.choice([f"?token={token()}", "?token=", "?token=%ff",
                                f"?token={token()}&token=x", f"?ticket={token()}",
                                "?ticket=" + "a" * 3000, "", f"?token={token()}&after_seq=-1"])
            await request(http, "flv", rng.choice(["GET", "HEAD"]),
                          f"{server.url}/live/{room}.flv{query}")
        for _ in Budget(200):  # any path, any method: unknown routes and methods are JSON too
            path = rng.choice(["/api/v1/", "/static/", "/live/", "/whip/", "/ws/", "/", "/x/"])
            path += "/".join(quote(str(value(rng, 6))[:100], safe="") for _ in range(3))
            path += rng.choice(["", "/../../package.json", "/%2e%2e/%2e%2e", ".flv", "?a=%ff"])
            await request(http, "path", rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"]),
                          f"{server.url}{path}", json_body(rng),
                          {"Authorization": f"Bearer {token()}"})
    await still_serves(server, before)


async def receive_or_close(ws: aiohttp.ClientWebSocketResponse, door: str, what: str,
                           oversized: bool) -> bool:
    """True while the socket is open; a close must be a clean one (after an oversized frame
    the server closes with 1009 and a frame the client sent meanwhile may see a reset)."""
    try:
        message = await ws.receive(timeout=2.0)
    except TimeoutError:
        return True  # an event the server swallowed (a like, say) is not a breakage
    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
        assert oversized or ws.close_code not in BAD_CLOSE_CODES, \
            f"{what}: closed {ws.close_code}"
        tally(f"{door} close {ws.close_code}")
        return False
    if message.type == aiohttp.WSMsgType.BINARY:
        got = msgpack.unpackb(message.data, raw=False)  # the server's frames are well formed
        tally(f"{door} {got.get('type')} {got.get('code', '')}")
    return True


async def fuzz_socket(http: aiohttp.ClientSession, rng: random.Random, url: str, what: str,
                      first: list[bytes], frames: int) -> None:
    try:
        ws = await http.ws_connect(url, heartbeat=None, timeout=aiohttp.ClientWSTimeout(5))
    except aiohttp.WSServerHandshakeError as refused:
        assert refused.status < 500, f"{what}: handshake {refused.status}"
        tally(f"{what} handshake {refused.status}")
        return
    try:
        sent: list[str] = []
        oversized = False
        for frame in first:
            await ws.send_bytes(frame)
            sent.append(f"{frame[:60]!r} ({len(frame)} B)")
        for _ in range(frames):
            if ws.closed:
                break
            roll = rng.random()
            try:
                if roll < 0.8:
                    frame = packed(rng)
                    await ws.send_bytes(frame)
                elif roll < 0.95:
                    text = mutate(rng, b'{"type": "chat"}').decode("utf-8", "replace")
                    frame = text.encode()
                    await ws.send_str(text)
                else:
                    frame = b"\x81" * rng.randint(70_000, 400_000)  # over the frame cap
                    await ws.send_bytes(frame)
                    oversized = True
                oversized = oversized or len(frame) > SMALLEST_FRAME_CAP
            except ConnectionResetError:  # the server closed first; the close is checked below
                await receive_or_close(ws, what, f"{what} after {sent}", oversized)
                break
            sent.append(f"{frame[:60]!r} ({len(frame)} B)")
            if not await receive_or_close(ws, what, f"{what} after {sent}", oversized):
                break
    finally:
        await ws.close()


async def test_fuzz_websockets(server: Server) -> None:
    rng = random.Random(SEED + 3)
    before = rss()
    base = await real_offer()
    signaling_token = tokens(server, rng, "publish")
    chat = server.token(ROOM, "fuzzer", "subscribe", "chat")
    ws_url = server.url.replace("http", "ws")
    async with aiohttp.ClientSession() as http:
        for i in Budget(120, 2 * FUZZ_S):
            if i % 2 == 0:
                join: list[bytes] = [msgpack.packb({"type": "join", "room": ROOM})]
                if rng.random() < 0.5:
                    sdp = sdp_offer(rng, base).decode("utf-8", "replace")
                    join.append(msgpack.packb({"type": rng.choice(["publish", "subscribe"]),
                                               "sdp": sdp, "cid": str(i)}))
                await fuzz_socket(http, rng, f"{ws_url}/ws?token={signaling_token()}", "/ws",
                                  join if rng.random() < 0.8 else [packed(rng)], 10)
            else:
                query = rng.choice([f"?token={chat}", f"?token={chat}&after_seq=-5",
                                    f"?token={chat}&after_seq=" + "9" * 40, "?token=x", ""])
                room = ROOM if rng.random() < 0.85 else rng.choice(["a" * 200, "%ff", "*"])
                await fuzz_socket(http, rng, f"{ws_url}/ws/events/{room}{query}", "/ws/events",
                                  [], 10)
    await still_serves(server, before)
    await publish_and_play(server, "fz3")


async def test_fuzz_event_gateway_handle(server: Server) -> None:
    """What the events data channel hands the gateway: random msgpack, under every grant set."""
    rng = random.Random(SEED + 4)
    before = rss()
    gateway = signaling_of(server).live
    who = [Claims(identity="fuzzer", room=ROOM, grants=frozenset(grants), name="")
           for grants in ([Grant.SUBSCRIBE], [Grant.CHAT], [Grant.SUBSCRIBE, Grant.CHAT],
                          [Grant.ADMIN], [Grant.PUBLISH])]
    for _ in Budget(3000):
        replies = await asyncio.wait_for(gateway.handle(ROOM, rng.choice(who), packed(rng)), 5)
        for reply in replies:
            message = msgpack.unpackb(reply, raw=False)
            assert isinstance(message, dict) and "type" in message, message
    await still_serves(server, before)


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> int:
    """Bytes the server sent until it closed (or ``limit_s`` passed)."""
    deadline, got = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except (TimeoutError, ConnectionError):
            return got
        if not chunk:
            return got
        got += len(chunk)
    return got


async def test_fuzz_rtmp(server: Server) -> None:
    """Raw bytes before and after a real handshake, then commands and media messages of random
    content, some publishing with a real token (the session must end with the connection)."""
    rng = random.Random(SEED + 5)
    before = rss()
    node = server.app[NODE_KEY]
    port = server.config.rtmp_port
    streams = [f"{ROOM}?token={server.token(ROOM, 'fuzzer', 'publish')}", f"{ROOM}?token=x",
               ROOM, "", "a" * 5000, f"{ROOM}?token={server.token(ROOM, 'v', 'subscribe')}",
               "../x?token=%ff"]
    for i in Budget(150, 2 * FUZZ_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if i % 3:  # a real C0+C1, the server's S0+S1+S2, a C2 (sometimes mutated)
                writer.write(b"\x03" + bytes(8) + bytes(rng.getrandbits(8) for _ in range(1528)))
                await writer.drain()
                s0s1s2 = await asyncio.wait_for(reader.readexactly(1 + 1536 + 1536), 5)
                c2 = s0s1s2[1:1537]
                writer.write(mutate(rng, c2) if rng.random() < 0.1 else c2)
            if i % 3 == 2:
                writer.write(rtmp_messages(rng, rng.choice(streams)))
            else:
                writer.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8000))))
            await writer.drain()
            answered = await read_until_closed(reader, 0.2)
            tally(f"rtmp mode {i % 3} {'answered' if answered else 'closed'}")
            if ROOM in node.rooms and node.rooms[ROOM].live:
                tally("rtmp live")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
    await still_serves(server, before)


async def test_ws_first_frame_over_the_cap_closes_1009(server: Server) -> None:
    """Found by the fuzz: a /ws socket whose first frame is over the frame cap was answered
    with an error frame on a closing transport, so the handler raised and aiohttp logged a
    traceback (and a client still sending saw 1006). Now the socket closes with 1009 (message
    too big) and nothing is logged (the autouse ``no_error_logged`` fixture)."""
    token = server.token(ROOM, "fuzzer", "subscribe")
    async with aiohttp.ClientSession() as http:
        for joined in (False, True):
            async with http.ws_connect(f"{server.url.replace('http', 'ws')}/ws?token={token}",
                                       heartbeat=None) as ws:
                if joined:
                    await ws.send_bytes(msgpack.packb({"type": "join", "room": ROOM}))
                    assert msgpack.unpackb((await ws.receive(timeout=5)).data)["type"] == \
                        "joined"
                await ws.send_bytes(b"\x81" * (MAX_SDP_BYTES + 4 * MAX_EVENT_BYTES + 1))
                for _ in range(5):  # the room's state may come first
                    message = await ws.receive(timeout=5)
                    if message.type != aiohttp.WSMsgType.BINARY:
                        break
                assert message.type == aiohttp.WSMsgType.CLOSE, message
                assert ws.close_code == 1009, (joined, ws.close_code)
    await still_serves(server, rss())


def teardown_module() -> None:
    """Run with -s to see what the doors answered (a look at the fuzz's coverage)."""
    print(sorted(STATUSES.items()))
