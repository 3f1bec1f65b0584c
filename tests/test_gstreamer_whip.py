"""GStreamer's webrtcbin publishing over WHIP with the offer it writes by itself (x264enc's
Constrained Baseline is 42c0xx, its Main 4d40xx, its High 6400xx), and an aiortc WHEP viewer
decoding the pictures. The client runs on the system Python, where Debian's PyGObject and
GStreamer introspection data live (see tests/gst_whip_client.py and ./dev setup)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from loadtest.clients import play
from sfu.codecs import describe, parse_profile_level_id
from sfu.node import NODE_KEY

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
CLIENT = Path(__file__).with_name("gst_whip_client.py")
ELEMENTS = ("webrtcbin", "x264enc", "rtph264pay", "opusenc", "rtpopuspay", "nicesrc",
            "videotestsrc", "audiotestsrc", "videoconvert")
PROBE = f"""
import gi
for name in ("Gst", "GstSdp", "GstWebRTC"):
    gi.require_version(name, "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import Gst, GstSdp, GstWebRTC, Nice
Gst.init(None)
missing = [e for e in {ELEMENTS!r} if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""
EVENT_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def gstreamer() -> str:
    """The system Python with GStreamer's WebRTC stack; fails (never skips) when missing."""
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, text=True,
                               timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot run {SYSTEM_PYTHON}: {exc}; run ./dev setup")
    if probe.returncode != 0:
        pytest.fail(f"GStreamer/PyGObject missing ({probe.stderr.strip()[-300:]}); run ./dev setup")
    if probe.stdout.strip():
        pytest.fail(f"GStreamer elements missing: {probe.stdout.strip()}; run ./dev setup")
    return SYSTEM_PYTHON


class GstPublisher:
    """The client process and the JSON events it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next_event(self, wanted: str) -> dict[str, Any]:
        """Read events until ``wanted``; fail on a refusal, an error or the process ending."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            for _ in range(1000):
                line = await self.proc.stdout.readline()
                if not line:
                    pytest.fail(f"the GStreamer client ended before {wanted!r}: {self.events}")
                event: dict[str, Any] = json.loads(line)
                self.events.append(event)
                if event["event"] == wanted:
                    return event
                if event["event"] in ("refused", "error"):
                    pytest.fail(f"GStreamer client: {event}")
        pytest.fail(f"no {wanted!r} in 1000 events")


@contextlib.asynccontextmanager
async def gst_publisher(
    python: str, server: Any, room: str, profile: str
) -> AsyncIterator[GstPublisher]:
    token = server.token(room, "gst-anchor", "publish")
    proc = await asyncio.create_subprocess_exec(
        python, str(CLIENT), f"{server.url}/whip/{room}", token, "--profile", profile,
        "--seconds", "60", "--loopback",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    publisher = GstPublisher(proc)
    try:
        yield publisher
    finally:
        if proc.returncode is None:
            proc.terminate()  # the client DELETEs its resource on SIGTERM
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def h264_fmtp(description: str) -> dict[str, str]:
    """The fmtp parameters of the (single) H.264 payload type of an SDP."""
    pt = re.search(r"a=rtpmap:(\d+) H264/90000", description)
    assert pt is not None, description
    fmtp = re.search(rf"a=fmtp:{pt[1]} (\S+)", description)
    assert fmtp is not None, description
    return dict(p.split("=", 1) for p in fmtp[1].split(";"))


@pytest.mark.parametrize(("profile", "expected", "spelling"), [
    ("constrained-baseline", "H.264 Constrained Baseline", "42c0"),
    ("main", "H.264 Main", "4d40"),
    ("high", "H.264 High", "6400"),
], ids=["constrained-baseline", "main", "high"])
async def test_webrtcbin_default_offer_publishes_and_a_viewer_decodes(
    gstreamer: str, server: Any, profile: str, expected: str, spelling: str
) -> None:
    room = f"gst-{profile}"
    async with gst_publisher(gstreamer, server, room, profile) as gst:
        offer = (await gst.next_event("offer"))["sdp"]
        offered = h264_fmtp(offer)
        assert offered["profile-level-id"].startswith(spelling), offered  # webrtcbin's words
        answer = await gst.next_event("answer")
        assert answer["status"] == 201
        answered = h264_fmtp(answer["sdp"])
        assert answered["profile-level-id"] == offered["profile-level-id"]  # echoed as written
        assert answered["packetization-mode"] == "1"
        assert "sprop-parameter-sets" not in answered
        assert "a=setup:passive" in answer["sdp"]
        await gst.next_event("state")  # connecting, then connected
        node = server.app[NODE_KEY]
        await wait_for(lambda: room in node.rooms and node.rooms[room].live, 15, "room live")
        video = next(p for p in node.rooms[room].producers() if p.kind == "video")
        assert describe(video.codec) == expected

        sizes: list[tuple[int, int]] = []
        viewer = await play(server.url, room, server.token(room, "v", "subscribe"),
                            on_frame=lambda f: sizes.append((f.width, f.height)))
        try:
            await wait_for(lambda: viewer.decoded >= 30, 20, "30 decoded frames at the viewer")
            assert set(sizes) == {(320, 240)}
            offered_to_viewer = h264_fmtp(viewer.pc.remoteDescription.sdp)
            assert parse_profile_level_id(offered_to_viewer["profile-level-id"]) is \
                parse_profile_level_id(offered["profile-level-id"])
            assert offered_to_viewer["profile-level-id"] == offered["profile-level-id"]
        finally:
            await viewer.close()
