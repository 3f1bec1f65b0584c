"""Chromium watches an OBS-like RTMP anchor (x264 High, B-frames on, AAC) over WebRTC: the viewer
page plays without freezing, and the same stream plays as HTTP-FLV in the mpegts.js page."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import free_port, loopback_config
from test_browser import collect_errors, page_url, wait_frames
from test_rtmp_ingest import ffmpeg_push, live, pushing, rtmp_url

from shopcast.config import Config

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

INBOUND_VIDEO = """async () => {
  let out = null;
  (await window.shopcast.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video")
      out = {decoded: r.framesDecoded || 0, freezes: r.freezeCount || 0,
             frozen: r.totalFreezesDuration || 0, dropped: r.framesDropped || 0};
  });
  return out;
}"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, rtmp_port=free_port())


async def longest_stall_s(sample: Any, seconds: float) -> tuple[float, list[dict[str, Any]]]:
    """Sample decoded frames every 50 ms; the longest stretch without a new one."""
    samples: list[dict[str, Any]] = []
    last_change = time.monotonic()
    longest = 0.0
    previous = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = await sample()
        now = time.monotonic()
        samples.append(stats)
        if stats["decoded"] != previous:
            previous, last_change = stats["decoded"], now
        longest = max(longest, now - last_change)
        await asyncio.sleep(0.05)
    return longest, samples


async def test_chromium_plays_an_obs_like_stream_with_b_frames_without_freezing(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    url = rtmp_url(server, "obs", server.token("obs", "anchor", "publish"))
    with pushing(ffmpeg_push(url, bframes=2, seconds=40)):
        await live(server, "obs")
        page = await chromium.new_page()
        collect_errors(page, "viewer", errors)
        await page.goto(page_url(server, "viewer", "obs", server.token("obs", "v", "subscribe")))
        await wait_frames(page, minimum=30)
        stall, samples = await longest_stall_s(lambda: page.evaluate(INBOUND_VIDEO), 8.0)
        first, last = samples[0], samples[-1]
        assert last["decoded"] - first["decoded"] >= 8 * 20, f"decoding goes on: {first} {last}"
        assert stall <= 0.5, f"a {stall:.2f} s stall: {samples[-1]}"
        assert last["freezes"] == first["freezes"], f"Chromium counted a freeze: {first} {last}"
    assert not errors, errors
