"""Viewer QoE reports on both backends: taken silently and aggregated (``/health`` and
``/metrics``), refused and counted when malformed, oversized or flooding, and nothing else
changes (no event published, the room's seq and other clients untouched)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import msgpack
import pytest
import test_live_gateway
from live_helpers import WsClient, claims, pack, send
from rest_helpers import signaling_of
from waiting import wait_for

from loadtest.clients import Viewer, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.config import Config
from signaling.bus import Bus
from signaling.live.gateway import EventGateway
from signaling.live.qoe import MAX_REPORT_BYTES, QoeReports
from signaling.live.schema import MAX_EVENT_BYTES
from signaling.store import Store
from signaling.tokens import Grant

pytest_plugins = ["store_fixtures"]
gateway = test_live_gateway.gateway  # the fixture: the gateway on each backend

ROOM = "r"


def report(transport: str = "webrtc", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "qoe", "transport": transport, "layer": None, "fps": 30.0, "width": 640,
        "height": 360, "played_s": 20.0, "freezes": 1, "freeze_s": 0.5,
        "jitter_buffer_ms": 80.0 if transport == "webrtc" else None,
        "packets_lost": 3 if transport == "webrtc" else None,
        "packets_received": 900 if transport == "webrtc" else None,
        "decode_ms": 2.5 if transport == "webrtc" else None,
        "buffer_s": 0.8 if transport == "flv" else None, "cores": 4, "memory_gb": 8,
    }
    return {**base, **overrides}


def samples(lines: list[str], name: str) -> dict[str, float]:
    """``name{labels} value`` lines -> {labels: value}."""
    out = {}
    for line in lines:
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name):].rpartition(" ")
            out[labels] = float(value)
    return out


async def test_reports_are_taken_silently_and_aggregated(gateway: EventGateway, bus: Bus
                                                         ) -> None:
    before = await bus.position(ROOM)
    for i in range(3):
        assert await send(gateway, claims(f"w{i}"), **report(fps=20.0 + 5 * i)) == []
    assert await send(gateway, claims("f0"), **report("flv", freeze_s=4.0)) == []
    assert await bus.position(ROOM) == before  # nothing published to the room
    health = await gateway.qoe.health(ROOM)
    assert health["viewers_reporting"] == 4
    assert health["transports"] == {"webrtc": 3, "flv": 1}
    assert health["layers"] == {"single": 4}
    assert health["fps"]["p50"] == 25.0 and health["fps"]["p99"] == 30.0
    assert health["jitter_buffer_ms"]["p50"] == 80.0
    assert health["flv_buffer_s"]["p90"] == 0.8
    assert health["stall_ratio"] == pytest.approx((3 * 0.5 + 4.0) / 80.0)
    lines = gateway.qoe.metrics()
    results = samples(lines, "shopcast_qoe_reports_total")
    assert results['{result="accepted"}'] == 4
    fps = samples(lines, "shopcast_qoe_fps_count")
    assert fps == {'{transport="webrtc"}': 3, '{transport="flv"}': 1}
    buckets = samples(lines, "shopcast_qoe_fps_bucket")
    assert buckets['{transport="webrtc",le="20"}'] == 1
    assert buckets['{transport="webrtc",le="+Inf"}'] == 3
    assert samples(lines, "shopcast_qoe_jitter_buffer_seconds_count") == {
        '{transport="webrtc"}': 1 * 3, '{transport="flv"}': 0}


async def test_a_viewers_last_report_replaces_its_first(gateway: EventGateway) -> None:
    viewer = claims("v")
    assert await send(gateway, viewer, **report(fps=10.0)) == []
    assert await send(gateway, viewer, **report(fps=24.0)) == []
    health = await gateway.qoe.health(ROOM)
    assert health["viewers_reporting"] == 1
    assert health["fps"]["p50"] == 24.0


@pytest.mark.parametrize("bad", [
    {"fps": "30"}, {"fps": -1}, {"fps": float("nan")}, {"played_s": float("inf")},
    {"transport": "rtmp"}, {"width": 1.5}, {"freezes": True}, {"layer": "x" * 17},
    {"extra": 1}, {"cores": 0},
])
async def test_malformed_reports_are_refused_and_counted(gateway: EventGateway, bus: Bus,
                                                         bad: dict[str, Any]) -> None:
    before = await bus.position(ROOM)
    replies = await send(gateway, claims("v"), **report(**bad), cid="q1")
    assert [r["type"] for r in replies] == ["error"]
    assert replies[0]["cid"] == "q1"
    assert gateway.qoe.results == {"accepted": 0, "malformed": 1, "too_large": 0,
                                   "rate_limited": 0}
    assert await bus.position(ROOM) == before
    assert (await gateway.qoe.health(ROOM))["viewers_reporting"] == 0


async def test_missing_field_is_malformed(gateway: EventGateway) -> None:
    partial = report()
    del partial["fps"]
    assert [r["type"] for r in await send(gateway, claims("v"), **partial)] == ["error"]
    assert gateway.qoe.results["malformed"] == 1


@pytest.mark.parametrize("size", [MAX_REPORT_BYTES + 1, MAX_EVENT_BYTES + 1])
async def test_oversized_reports_are_refused_and_counted(gateway: EventGateway,
                                                         size: int) -> None:
    raw = pack(report(padding="x" * size))
    assert len(raw) > size
    replies = await gateway.handle(ROOM, claims("v"), raw)
    assert [msgpack.unpackb(r)["type"] for r in replies] == ["error"]
    assert gateway.qoe.results["too_large"] == 1
    assert gateway.qoe.results["accepted"] == 0
    assert (await gateway.qoe.health(ROOM))["viewers_reporting"] == 0


async def test_garbage_is_not_counted_as_a_report(gateway: EventGateway) -> None:
    for raw in (b"\xc1", b"\x81\xa4type\xa4chat", pack({"type": 5})):
        assert len(await gateway.handle(ROOM, claims("v"), raw)) == 1
    assert sum(gateway.qoe.results.values()) == 0


async def test_a_flood_is_dropped_unanswered_and_counted(gateway: EventGateway) -> None:
    flooder, other = claims("flood"), claims("calm")
    replies = [await send(gateway, flooder, **report()) for _ in range(10)]
    assert replies == [[]] * 10  # no reply flood
    assert gateway.qoe.results["accepted"] == 2  # the burst
    assert gateway.qoe.results["rate_limited"] == 8
    assert await send(gateway, other, **report()) == []  # another viewer's bucket is its own
    assert gateway.qoe.results["accepted"] == 3
    assert (await gateway.qoe.health(ROOM))["viewers_reporting"] == 2


async def test_a_report_needs_a_watching_grant(gateway: EventGateway) -> None:
    replies = await send(gateway, claims("c", Grant.CHAT), **report())
    assert replies[0]["code"] == "forbidden"
    assert gateway.qoe.results["accepted"] == 0


async def test_reports_expire_and_are_pruned(store: Store) -> None:
    now = [1000.0]
    qoe = QoeReports(store, expiry_s=30, clock=lambda: now[0])
    await qoe.take(ROOM, "old", report())
    now[0] += 20
    await qoe.take(ROOM, "new", report("flv"))
    now[0] += 15  # "old" is 35 s old, "new" 15 s
    health = await qoe.health(ROOM)
    assert health["viewers_reporting"] == 1 and health["transports"] == {"flv": 1}
    assert set(await store.hgetall(ROOM, "qoe")) == {"new"}  # the expired one pruned


# --- the real server: /ws/events and the events data channel --------------------------------


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


async def get(server: Any, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(server.url + path,
                                                         headers=headers) as response:
        body = await (response.json() if path.startswith("/api") else response.text())
        return response.status, body


def receiver_report(viewer: Viewer, started: float) -> dict[str, Any]:
    """A report made from an aiortc viewer's own receive counters."""
    assert viewer.video is not None
    video = viewer.video.stream
    played = max(0.001, time.monotonic() - started)
    return {"type": "qoe", "transport": "webrtc", "fps": round(video.frames / played, 2),
            "width": 0, "height": 0, "played_s": round(played, 3), "freezes": 0,
            "freeze_s": 0.0, "packets_lost": video.lost, "packets_received": video.packets}


@pytest.mark.slow
async def test_reports_over_both_doors_reach_health_and_metrics(server: Any) -> None:
    node = server.app[NODE_KEY]
    room = "qoe"
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    viewers: list[Viewer] = []
    sockets: list[WsClient] = []
    try:
        await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "anchor live")
        started = time.monotonic()
        viewers = [await play(server.url, room, server.token(room, f"w{i}", "subscribe"),
                              decode=False, events=True) for i in range(2)]
        sockets = [await WsClient.open(server.url, room, server.token(room, f"f{i}", "subscribe"))
                   for i in range(3)]
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), 20, "state")
        assert [(await s.next())["type"] for s in sockets] == ["state"] * 3
        await wait_for(lambda: all(v.frames > 10 for v in viewers), 20, "frames at viewers")
        history = (await get(server, f"/api/v1/rooms/{room}",
                             server.token(room, "ops", "admin")))[1]
        for viewer in viewers:
            viewer.events.send(receiver_report(viewer, started))
        for sock in sockets:
            await sock.send(**report("flv"))
        flooder = sockets[0]
        for _ in range(6):  # its burst is spent: all dropped
            await flooder.send(**report("flv"))
        await flooder.send(**report("flv", fps="x"))
        await flooder.ws.send_bytes(pack(report("flv", padding="x" * 2000)))
        calm = sockets[1]
        await calm.send(type="chat", text="still here")  # needs a chat grant: refused alone

        admin = server.token(room, "ops", "admin")

        async def reporting() -> int:
            status, body = await get(server, f"/api/v1/rooms/{room}/health", admin)
            assert status == 200, body
            return int(body["viewers_reporting"])

        for _ in range(100):  # 10 s at most
            if await reporting() >= 5:
                break
            await asyncio.sleep(0.1)
        status, health = await get(server, f"/api/v1/rooms/{room}/health",
                                   server.token(room, "anchor", "publish"))
        assert status == 200
        assert health["viewers_reporting"] == 5
        assert health["transports"] == {"webrtc": 2, "flv": 3}
        assert health["fps"]["p99"] is not None and health["fps"]["p99"] > 5  # real receivers
        errors = [await flooder.until("error"), await flooder.until("error")]
        assert [e["code"] for e in errors] == ["invalid", "invalid"]
        assert (await calm.until("error"))["code"] == "forbidden"
        _, text = await get(server, "/metrics")
        lines = text.splitlines()
        results = samples(lines, "shopcast_qoe_reports_total")
        # the flooder's burst of 2 took its first report and one of the six, the rest are
        # dropped but what its bucket refilled meanwhile (one per 2 s: on a loaded machine the
        # flood may take seconds to be handled)
        accepted, limited = results['{result="accepted"}'], results['{result="rate_limited"}']
        assert accepted + limited == 11 and limited >= 3, results
        assert (results['{result="malformed"}'], results['{result="too_large"}']) == (1, 1)
        assert samples(lines, "shopcast_qoe_fps_count") == {
            '{transport="webrtc"}': 2, '{transport="flv"}': accepted - 2}
        # nothing published to the room but the coalesced viewer count of the joins
        since = await signaling_of(server).bus.history(room, history["seq"], 100)
        assert {e.type for e in since} <= {"viewers"}, [e.data for e in since]
        for viewer in viewers:  # and the viewers' channels got nothing back for reports
            assert not viewer.events.of_type("error")
    finally:
        for sock in sockets:
            await sock.close()
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


async def test_health_is_for_the_rooms_anchor_and_admins(server: Any) -> None:
    path = "/api/v1/rooms/shop/health"
    assert (await get(server, path))[0] == 401
    for token in (server.token("shop", "v", "subscribe"), server.token("other", "a", "admin")):
        status, body = await get(server, path, token)
        assert status == 403 and "error" in body
    status, body = await get(server, "/api/v1/rooms/bad%20room/health",
                             server.token("*", "ops", "admin"))
    assert status == 400 and "error" in body
    status, body = await get(server, path, server.token("shop", "a", "publish"))
    assert status == 200
    assert body["viewers_reporting"] == 0 and body["fps"] == {"p50": None, "p90": None,
                                                              "p99": None}
    assert (await get(server, "/healthz"))[0] == 200  # still serving



async def test_health_merges_what_every_process_took(store: Store, backend: str, prefix: str
                                                     ) -> None:
    """Two processes' gateways on one store (a node's data channels, a signaling process's
    /ws/events; with Redis, two clients of it): either one's /health counts both's reports."""
    from signaling.backends import open_backends

    other = open_backends(backend, prefix)[0] if backend else store  # memory: one process
    if other is not store:
        await other.start()
    try:
        node, front = QoeReports(store), QoeReports(other)
        await node.take(ROOM, "webrtc-viewer", report())
        await front.take(ROOM, "flv-viewer", report("flv"))
        for qoe in (node, front):
            health = await qoe.health(ROOM)
            assert health["viewers_reporting"] == 2
            assert health["transports"] == {"webrtc": 1, "flv": 1}
        assert node.results["accepted"] == front.results["accepted"] == 1  # counters: own
    finally:
        if other is not store:
            await other.close()
