"""Multi-node on loopback, every piece a real process: one redis-server, two ``shopcast
signaling`` and two ``shopcast sfu`` processes started with ``.venv/bin/shopcast``.

An aiortc anchor publishes through signaling A (which forwards WHIP to the room's node), a
viewer watches through signaling B; both reach the same node and the viewer decodes the
anchor's frames. A second
room goes to the other node; a drained node takes no new room; killing a room's node makes the
room re-assignable within 5 s and a re-publish lands on the surviving node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from conftest import free_port
from rest_helpers import Api

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from signaling.tokens import mint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "multinode-secret-0123456789abcdef"
SHOPCAST = str(Path(sys.executable).with_name("shopcast"))
START_LIMIT_S = 30.0


@dataclass
class Proc:
    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def token(room: str, identity: str, *grants: str) -> str:
    return mint(SECRET, room=room, identity=identity, grants=list(grants), ttl=600)


def say(text: str) -> None:
    print(f"[multinode {time.strftime('%H:%M:%S')}] {text}", flush=True)


async def healthy(url: str) -> bool:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http, \
                http.get(url + "/healthz") as response:
            return response.status == 200
    return False


def spawn(name: str, role: str, redis_url: str, prefix: str, tmp_path: Path,
          rtmp_port: int = 0) -> Proc:
    """``.venv/bin/shopcast <role>`` on a free loopback port, output to ``<name>.log``; an SFU
    node's RTMP door is off unless ``rtmp_port`` is given."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    args = [SHOPCAST, role, "--redis", redis_url, "--redis-prefix", prefix,
            "--host", "127.0.0.1", "--port", str(port), "--secret", SECRET,
            "--secret-file", str(tmp_path / "secret"), "--workers", "0",
            "--ice-hosts", "127.0.0.1", "--log-level", "INFO"]
    if role == "sfu":
        args += ["--node-id", name, "--rtmp-port", str(rtmp_port)]
    with log.open("wb") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return Proc(name, f"http://127.0.0.1:{port}", popen, log)


@pytest_asyncio.fixture
async def cluster(redis_server: str, tmp_path: Path) -> AsyncIterator[dict[str, Proc]]:
    prefix = f"mn{os.getpid()}{int(time.time())}"
    procs = {name: spawn(name, role, redis_server, prefix, tmp_path) for name, role in (
        ("sfu-a", "sfu"), ("sfu-b", "sfu"), ("sig-a", "signaling"), ("sig-b", "signaling"))}
    try:
        await wait_started(procs)
        say("up: " + ", ".join(f"{p.name}={p.url} (pid {p.popen.pid})" for p in procs.values()))
        yield procs
    finally:
        stop_all(procs)


async def wait_started(procs: dict[str, Proc]) -> None:
    """Every process answers /healthz within START_LIMIT_S, or the test fails with its log."""
    deadline = time.monotonic() + START_LIMIT_S
    for proc in procs.values():
        while not await healthy(proc.url):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{proc.name} did not start:\n{proc.tail()}")
            await asyncio.sleep(0.1)


def stop_all(procs: dict[str, Proc]) -> None:
    """SIGTERM every process, then wait (SIGKILL after 10 s)."""
    for proc in procs.values():
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait(timeout=5)


async def eventually(check: Any, limit_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(every_s)


async def node_of(api: Api, room: str, identity: str) -> str:
    """Which node holds ``identity``'s session in ``room``, as the node reported it (the front
    door forwards WHIP/WHEP, so resource URLs name the signaling process, not the node)."""
    async def held() -> str:
        status, body = await api.get(f"/rooms/{room}/participants/{identity}")
        nodes = {s["node"] for s in body.get("sessions", [])} if status == 200 else set()
        return nodes.pop() if len(nodes) == 1 else ""

    node: str = await eventually(held, 5, f"{identity}'s session in {room} reported")
    return node


async def anchor_on(url: str, room: str) -> Any:
    return await publish(url, room, token(room, "anchor", "publish"), PaintedVideoTrack(),
                         ToneAudioTrack())


async def decoded_frames(url: str, room: str, frames: int = 30) -> tuple[Any, str]:
    """Watch through ``url`` (WHEP, forwarded to the node) until ``frames`` frames decode."""
    async def attempt() -> Any:  # the room is live once the anchor's session is reported
        with contextlib.suppress(Exception):
            return await play(url, room, token(room, "viewer", "subscribe"), decode=True)
        return None

    viewer = await eventually(attempt, 15, f"WHEP play of {room}", every_s=0.3)

    async def decoding() -> bool:
        return bool(viewer.decoded >= frames)

    await eventually(decoding, 20, f"{frames} decoded frames in {room}")
    return viewer, viewer.resource_url


async def test_two_signaling_two_sfu_processes(cluster: dict[str, Proc]) -> None:
    sig_a, sig_b = cluster["sig-a"], cluster["sig-b"]
    admin_a = Api(sig_a.url + "/api/v1", token("*", "ops", "admin"))
    admin_b = Api(sig_b.url + "/api/v1", token("*", "ops", "admin"))
    clients: list[Any] = []
    try:
        async def both_nodes() -> list[str]:
            status, body = await admin_a.get("/nodes")
            ids = sorted(n["id"] for n in body["nodes"]) if status == 200 else []
            return ids if ids == ["sfu-a", "sfu-b"] else []

        say(f"registered nodes: {await eventually(both_nodes, 10, 'both nodes registered')}")

        # room 1: anchor through signaling A, viewer through signaling B, same node
        anchor1 = await anchor_on(sig_a.url, "shop1")
        clients.append(anchor1)
        assert anchor1.resource_url.startswith(sig_a.url + "/whip/shop1/")
        owner1 = await node_of(admin_a, "shop1", "anchor")
        on_node = {id(anchor1): owner1}
        say(f"anchor of shop1 via sig-a -> {owner1}: {anchor1.resource_url}")
        viewer1, viewer_url = await decoded_frames(sig_b.url, "shop1")
        clients.append(viewer1)
        assert viewer_url.startswith(sig_b.url + "/whep/shop1/")
        on_node[id(viewer1)] = await node_of(admin_b, "shop1", "viewer")
        assert on_node[id(viewer1)] == owner1
        say(f"viewer of shop1 via sig-b -> {owner1}: {viewer1.decoded} frames decoded")
        status, room1 = await admin_b.get("/rooms/shop1")
        assert status == 200 and room1["node"] == owner1 and room1["live"] is True
        assert {p["identity"]: p["node"] for p in room1["publishers"]} == {"anchor": owner1}
        status, plan = await Api(sig_b.url + "/api/v1", token("shop1", "v2", "subscribe")).get(
            "/rooms/shop1/playback")
        assert status == 200 and plan["transport"] == "whep"
        assert plan["whep_url"] == cluster[owner1].url + "/whep/shop1"
        say(f"playback plan via sig-b: {plan['transport']} {plan['url']}")

        # room 2 goes to the other node: the owner's heartbeat now shows a viewer
        other = "sfu-b" if owner1 == "sfu-a" else "sfu-a"

        async def owner_loaded() -> bool:
            _, body = await admin_a.get("/nodes")
            return any(n["id"] == owner1 and n["viewers"] >= 1 for n in body["nodes"])

        await eventually(owner_loaded, 5, "the owner's heartbeat with its viewer")
        anchor2 = await anchor_on(sig_b.url, "shop2")
        clients.append(anchor2)
        on_node[id(anchor2)] = await node_of(admin_b, "shop2", "anchor")
        assert on_node[id(anchor2)] == other
        say(f"anchor of shop2 via sig-b -> {other} (least loaded)")

        # drain the other node: a new room goes to the loaded owner instead
        status, drained = await admin_b.post(f"/nodes/{other}/drain")
        assert status == 200 and drained["draining"] is True
        anchor3 = await anchor_on(sig_a.url, "shop3")
        clients.append(anchor3)
        on_node[id(anchor3)] = await node_of(admin_a, "shop3", "anchor")
        assert on_node[id(anchor3)] == owner1
        say(f"{other} drained: shop3 via sig-a -> {owner1}")
        status, reopened = await admin_a.post(f"/nodes/{other}/drain", {"draining": False})
        assert status == 200 and reopened["draining"] is False

        # kill the owner of shop1: dead within 5 s, then a re-publish lands on the survivor
        cluster[owner1].popen.kill()
        killed_at = time.monotonic()
        say(f"killed {owner1} (SIGKILL)")

        async def owner_dead() -> bool:
            _, body = await admin_a.get("/nodes")
            return owner1 not in {n["id"] for n in body["nodes"]}

        await eventually(owner_dead, 8, f"{owner1} declared dead", every_s=0.05)
        dead_after = time.monotonic() - killed_at
        say(f"{owner1} declared dead {dead_after:.2f} s after the kill")
        assert dead_after <= 5.0, f"dead after {dead_after:.2f} s"

        for client in clients[:2] + clients[3:]:
            if on_node[id(client)] == owner1:
                await client.pc.close()  # its node is gone; nothing to DELETE
        anchor1b = await anchor_on(sig_a.url, "shop1")
        clients.append(anchor1b)
        assert await node_of(admin_a, "shop1", "anchor") == other
        say(f"re-publish of shop1 via sig-a -> {other} {time.monotonic() - killed_at:.2f} s "
            f"after the kill: {anchor1b.resource_url}")

        async def reaped() -> bool:  # shop3 had no re-publish: the reaper frees it
            _, body = await admin_b.get("/rooms/shop3")
            return isinstance(body, dict) and body.get("node", "") != owner1

        await eventually(reaped, 3, "shop3 released by the reaper")
        say(f"shop3 (not re-published) released by the reaper "
            f"{time.monotonic() - killed_at:.2f} s after the kill")
        viewer1b, viewer_url = await decoded_frames(sig_b.url, "shop1")
        clients.append(viewer1b)
        assert await node_of(admin_b, "shop1", "viewer") == other
        say(f"viewer of shop1 via sig-b -> {other}: {viewer1b.decoded} frames decoded")
        status, room1 = await admin_a.get("/rooms/shop1")
        assert status == 200 and room1["node"] == other
        assert [p["node"] for p in room1["publishers"]] == [other], "dead node's sessions gone"
    finally:
        for client in reversed(clients):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


async def test_websocket_signaling_is_redirected_to_the_rooms_node(
    cluster: dict[str, Proc]
) -> None:
    """/ws on a signaling process has no media: publish and subscribe answer ``redirect`` to the
    room's node, where the same messages get answers; the viewer decodes the anchor."""
    from test_ws_signaling import PaintedViewer, Socket, negotiate, publisher_pc

    room, sig_a, sig_b = "wsmn", cluster["sig-a"], cluster["sig-b"]
    anchor_token, viewer_token = token(room, "anchor", "publish"), token(room, "v", "subscribe")
    sockets: list[Socket] = []
    publisher, viewer = publisher_pc(), PaintedViewer()
    try:
        front = await Socket.open(sig_a.url, anchor_token)
        sockets.append(front)
        assert (await front.request(type="join", room=room))["type"] == "joined"
        probe = publisher_pc()
        moved = await negotiate(front, probe, "publish")
        await probe.close()  # a redirect answers no SDP: this offer goes nowhere
        assert moved["type"] == "redirect", moved
        node = next(p for p in cluster.values() if p.url == moved["url"])
        say(f"/ws publish on sig-a: redirect to {node.name}")
        on_node = await Socket.open(node.url, anchor_token)
        sockets.append(on_node)
        await on_node.request(type="join", room=room)
        answer = await negotiate(on_node, publisher, "publish")
        assert answer["type"] == "answer", answer

        async def redirected() -> Any:
            front_b = await Socket.open(sig_b.url, viewer_token)
            sockets.append(front_b)
            await front_b.request(type="join", room=room)
            probe = PaintedViewer()
            reply = await negotiate(front_b, probe.pc, "subscribe")
            await probe.close()
            return reply if reply["type"] == "redirect" else None

        moved_b = await eventually(redirected, 15, "subscribe redirect from sig-b", every_s=0.5)
        assert moved_b["url"] == node.url
        watch = await Socket.open(node.url, viewer_token)
        sockets.append(watch)
        await watch.request(type="join", room=room)

        async def answered() -> bool:  # not_live until the anchor's leg has connected
            nonlocal viewer
            reply = await negotiate(watch, viewer.pc, "subscribe")
            if reply["type"] == "answer":
                return True
            assert reply.get("code") == "not_live", reply
            await viewer.close()
            viewer = PaintedViewer()
            return False

        await eventually(answered, 15, "subscribe answered on the room's node", every_s=0.3)
        viewer.start()

        async def playing() -> bool:
            return viewer.painted >= 20

        await eventually(playing, 20, "frames decoded through /ws on the room's node")
        say(f"/ws subscribe on sig-b: redirect to {node.name}; {viewer.painted} frames decoded")
    finally:
        await viewer.close()
        await publisher.close()
        for socket in sockets:
            await socket.close()
