"""Auto layer switching on a real weak link: a viewer page in headless Chromium runs inside a
network namespace joined by a veth pair, and the link into it is capped at 300 kbit/s with a
token bucket (this kernel has no netem, so the loss comes from the cap). It moves to the low
layer within 5 s and decodes it at >= 20 fps; with the cap lifted it is back on high within
15 s. A viewer outside the namespace, in the same room, stays on high throughout.

The anchor (aiortc, two painted layers) sends no audio: aiortc's Opus runs at ~110 kbit/s with
headers, three times a browser's, and would fill the cap beside the 150 kbit/s layer. An aiortc
viewer is not the client here: its jitter buffer waits for a missing packet until 128 newer
ones arrived, so under this loss it stalls for seconds whatever the server does; Chromium
recovers by NACK and keyframe as browsers do."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import test_browser_network_quality as anchor_prompt
from netns import Namespace
from test_layers import SmallPaintedTrack
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack
from sfu.node import NODE_KEY
from sfu.viewer import Viewer as ViewerLeg

pytestmark = [pytest.mark.slow, pytest.mark.browser]

ROOM = "weak"
CAP = "300kbit"
DOWN_WITHIN_S = 5.0
UP_WITHIN_S = 15.0
HOLD_S = 4.0  # on low under the cap, where its frame rate is measured

# the fixtures of the anchor prompt's test: a namespace, the server on its veth address
netns = anchor_prompt.netns
config = anchor_prompt.config
chromium_in = anchor_prompt.chromium_in


def _tc(*args: str) -> None:
    subprocess.run(["tc", "qdisc", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def downlink_cap(ns: Namespace) -> Iterator[None]:
    """Cap what enters the namespace (the viewer's downlink): the host end's egress."""
    _tc("add", "dev", ns.host_dev, "root", "tbf", "rate", CAP, "burst", "8kb", "latency", "100ms")
    try:
        yield
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _tc("del", "dev", ns.host_dev, "root")


class PageStats:
    """The viewer page's decoding figures (window.shopcast.stats())."""

    def __init__(self, page: Any) -> None:
        self.page = page

    async def read(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.page.evaluate("window.shopcast.stats()")
        return stats

    async def wait(self, ok: Any, limit_s: float, what: str) -> None:
        deadline = time.monotonic() + limit_s
        last: dict[str, Any] = {}
        for _ in range(int(limit_s * 10) + 1):
            last = await self.read()
            if ok(last) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert ok(last), f"timed out after {limit_s}s waiting for {what}: {last}"


def _leg(server: Any, identity: str) -> ViewerLeg:
    room = server.app[NODE_KEY].rooms[ROOM]
    return next(s for s in room.viewers.values()
                if isinstance(s, ViewerLeg) and s.identity == identity)


def _layer(server: Any, identity: str) -> str:
    with contextlib.suppress(StopIteration, KeyError):
        leg = _leg(server, identity)
        return next(c.producer.layer for c in leg.consumers if c.producer.kind == "video")
    return ""


async def test_a_capped_viewer_goes_low_and_back_while_an_open_one_stays_high(
    server: Any, netns: Namespace, tmp_path: Path
) -> None:
    low_track = SmallPaintedTrack(colour="blue")
    anchor = await publish(server.url, ROOM, server.token(ROOM, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), None,
                           low_video_track=low_track)
    node = server.app[NODE_KEY]
    await wait_for(lambda: ROOM in node.rooms and node.rooms[ROOM].live, 10, "anchor live")
    open_viewer = await play(server.url, ROOM, server.token(ROOM, "open", "subscribe"),
                             decode=False)
    open_layers: set[str] = set()

    async def watch_open() -> None:
        for _ in range(600):  # 60 s at most
            open_layers.add(_layer(server, "open"))
            await asyncio.sleep(0.1)

    watcher = asyncio.ensure_future(watch_open())
    try:
        origin = server.url
        async with chromium_in(netns, tmp_path, origin) as browser:
            page = await browser.new_page()
            await page.goto(f"{server.url}/viewer?" + urlencode(
                {"room": ROOM, "token": server.token(ROOM, "weak", "subscribe"),
                 "transport": "webrtc"}))
            weak = PageStats(page)
            await weak.wait(lambda st: st["framesDecoded"] >= 30 and st["frameHeight"] == 360,
                            15, "the namespace viewer decodes the high layer")
            assert _layer(server, "weak") == "high"
            with downlink_cap(netns):
                capped = time.monotonic()
                await wait_for(lambda: _layer(server, "weak") == "low", DOWN_WITHIN_S,
                               f"the capped viewer on low within {DOWN_WITHIN_S} s")
                down_s = time.monotonic() - capped
                await weak.wait(lambda st: st["frameHeight"] == 180, 5, "320x180 decoded")
                start_frames, start = (await weak.read())["framesDecoded"], time.monotonic()
                sent_frames = low_track.frame_no
                await asyncio.sleep(HOLD_S)
                fps = ((await weak.read())["framesDecoded"] - start_frames) / (
                    time.monotonic() - start)
                source_fps = (low_track.frame_no - sent_frames) / HOLD_S
                assert _layer(server, "weak") == "low"
                assert fps >= 20, f"{fps:.1f} fps on low under the cap ({source_fps:.1f} sent)"
            lifted = time.monotonic()
            await wait_for(lambda: _layer(server, "weak") == "high", UP_WITHIN_S,
                           f"back on high within {UP_WITHIN_S} s of the cap lifted")
            up_s = time.monotonic() - lifted
            await weak.wait(lambda st: st["frameHeight"] == 360, 5, "640x360 decoded again")
            print(f"switch down {down_s:.2f} s after the cap, up {up_s:.2f} s after the lift, "
                  f"{fps:.1f} fps on low")
        assert open_viewer.frames > 0
        open_layers.discard("")
        assert open_layers == {"high"}, open_layers
    finally:
        watcher.cancel()
        await open_viewer.close()
        await anchor.close()
