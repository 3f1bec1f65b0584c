"""The signaling front door with real processes: one redis-server, two ``shopcast signaling``
and one ``shopcast sfu`` (the room lives on that third process), started as
``tests/test_multinode.py`` does.

An aiortc anchor publishes through signaling A, viewers play through A and B and decode
frames, a viewer whose HTTP is curl's (libcurl, as OBS) gets its answer and connects; every
request went to the one front-door URL each client was given, never to the node, so nothing
depended on re-sending ``Authorization`` after a redirect. The node's own answers (403 for a
viewer's token on the anchor's resource, 404, PATCH's 405) pass through, and each DELETE through
the front door ends the session on the node (204).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from multidict import CIMultiDict
from test_multinode import Proc, eventually, spawn, stop_all, token, wait_started

from loadtest.clients import loopback_only, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest_asyncio.fixture
async def cluster(redis_server: str, tmp_path: Path) -> AsyncIterator[dict[str, Proc]]:
    prefix = f"fdc{os.getpid()}{int(time.time())}"
    procs = {name: spawn(name, role, redis_server, prefix, tmp_path) for name, role in (
        ("sfu-1", "sfu"), ("sig-a", "signaling"), ("sig-b", "signaling"))}
    try:
        await wait_started(procs)
        yield procs
    finally:
        stop_all(procs)


def one_url_session(seen: list[str]) -> aiohttp.ClientSession:
    """An HTTP client that records every request it makes (the loadtest clients never let
    aiohttp follow a redirect: any ``307`` would show up here as a request to the node)."""
    async def started(session: Any, context: Any, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(f"{params.method} {params.url}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(started)
    return aiohttp.ClientSession(trace_configs=[trace], timeout=aiohttp.ClientTimeout(total=20))


async def curl(tmp_path: Path, *args: str) -> tuple[int, CIMultiDict[str], str]:
    """One exchange with libcurl's command line (what OBS's WHIP output uses), following
    redirects (``-L``) as OBS does: curl would not send ``Authorization`` to another origin."""
    head, body = tmp_path / "curl-head", tmp_path / "curl-body"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-L", "--max-time", "15", "-D", str(head), "-o", str(body), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    blocks = [b for b in head.read_bytes().decode().split("\r\n\r\n") if b.strip()]
    status_line, *lines = blocks[-1].split("\r\n")  # the last response's headers
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(status_line.split()[1]), headers, body.read_bytes().decode()


async def curl_viewer(tmp_path: Path, front: Proc, room: str) -> None:
    """A WHEP viewer whose HTTP is curl's: offer, answer, connected, DELETE, all at ``front``."""
    loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = tmp_path / "offer.sdp"
        offer.write_text(pc.localDescription.sdp)
        auth = f"Authorization: Bearer {token(room, 'curl', 'subscribe')}"
        status, headers, answer_sdp = await curl(
            tmp_path, "-X", "POST", "-H", auth, "-H", "Content-Type: application/sdp",
            "--data-binary", f"@{offer}", f"{front.url}/whep/{room}")
        assert status == 201, answer_sdp
        assert headers["Location"].startswith(f"/whep/{room}/")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

        async def connected() -> bool:
            return pc.connectionState == "connected"

        await eventually(connected, 10, "curl viewer's ICE and DTLS with the node")
        status, _, _ = await curl(tmp_path, "-X", "DELETE", "-H", auth,
                                  front.url + headers["Location"])
        assert status == 204
    finally:
        await pc.close()


async def node_sessions(node: Proc) -> int:
    async with aiohttp.ClientSession() as http, http.get(node.url + "/healthz") as response:
        sessions: int = (await response.json())["sessions"]
        return sessions


async def test_one_url_clients_through_two_front_doors(
    cluster: dict[str, Proc], tmp_path: Path
) -> None:
    sig_a, sig_b, node = cluster["sig-a"], cluster["sig-b"], cluster["sfu-1"]
    room = "onedoor"
    seen_a: list[str] = []
    seen_b: list[str] = []
    http_a, http_b = one_url_session(seen_a), one_url_session(seen_b)
    clients: list[Any] = []
    try:
        anchor_token = token(room, "anchor", "publish")

        async def anchor_published() -> Any:  # until the node's first heartbeat lands
            with contextlib.suppress(Exception):
                return await publish(sig_a.url, room, anchor_token, PaintedVideoTrack(),
                                     ToneAudioTrack(), session=http_a)
            return None

        anchor = await eventually(anchor_published, 10, "WHIP through sig-a", every_s=0.3)
        clients.append(anchor)
        assert anchor.resource_url.startswith(sig_a.url + "/whip/onedoor/")

        async def watching(front: Proc, http: aiohttp.ClientSession, who: str) -> Any:
            async def attempt() -> Any:  # not_live until the anchor's session is reported
                with contextlib.suppress(Exception):
                    return await play(front.url, room, token(room, who, "subscribe"),
                                      decode=True, session=http)
                return None

            viewer = await eventually(attempt, 15, f"WHEP through {front.name}", every_s=0.3)
            clients.append(viewer)

            async def decoding() -> bool:
                return bool(viewer.decoded >= 30)

            await eventually(decoding, 20, f"30 frames decoded via {front.name}")
            assert viewer.resource_url.startswith(front.url + "/whep/onedoor/")
            return viewer

        viewer_b = await watching(sig_b, http_b, "viewer-b")
        viewer_a = await watching(sig_a, http_a, "viewer-a")
        assert await node_sessions(node) == 3  # the media lives on the node
        await curl_viewer(tmp_path, sig_b, room)
        assert await node_sessions(node) == 3  # curl's DELETE ended its session

        # the node's own authorization step: a viewer's token cannot end the anchor's session
        async with http_b.delete(anchor.resource_url.replace(sig_a.url, sig_b.url), headers={
                "Authorization": f"Bearer {token(room, 'viewer-b', 'subscribe')}"}) as r:
            assert r.status == 403 and (await r.json())["error"]["code"] == "missing_grant"
        # PATCH (trickle) and an unknown resource: the node's own answers pass through
        anchor_auth = {"Authorization": f"Bearer {anchor_token}"}
        async with http_a.patch(anchor.resource_url, data="a=end-of-candidates\r\n", headers={
                **anchor_auth, "Content-Type": "application/trickle-ice-sdpfrag"}) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == "trickle_not_supported"
        async with http_a.delete(sig_a.url + "/whip/onedoor/nope", headers=anchor_auth) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
        before = viewer_b.decoded
        await eventually(lambda: _more(viewer_b, before), 5, "frames still flowing")

        await viewer_b.close()
        await viewer_a.close()
        await anchor.close()
        assert [c.delete_status for c in (viewer_b, viewer_a, anchor)] == [204, 204, 204]

        async def ended() -> bool:
            return await node_sessions(node) == 0

        await eventually(ended, 5, "the node's sessions ended by the DELETEs")
        assert seen_a and seen_b
        assert all(s.split(" ", 1)[1].startswith(sig_a.url + "/") for s in seen_a), seen_a
        assert all(s.split(" ", 1)[1].startswith(sig_b.url + "/") for s in seen_b), seen_b
        assert sum(s.startswith("DELETE") for s in seen_a + seen_b) == 5
    finally:
        for client in reversed(clients):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)
        await http_a.close()
        await http_b.close()


async def _more(viewer: Any, before: int) -> bool:
    return bool(viewer.decoded > before + 10)
