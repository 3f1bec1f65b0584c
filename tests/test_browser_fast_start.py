"""Chromium joining through a fast start (the cached keyframe and the frames after it, re-stamped
1 ms apart) plays as live as a viewer that waited for its own keyframe: its jitter buffer does
not hold the stream back by the age of the cached keyframe."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
from test_browser import collect_errors, page_url, wait_frames
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JITTER = """async () => {
  let out = null;
  (await window.shopcast.pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video")
      out = {delay: r.jitterBufferDelay, emitted: r.jitterBufferEmittedCount,
             decoded: r.framesDecoded};
  });
  return out;
}"""


async def jitter_buffer_ms(page: Page, window_s: float = 2.0) -> float:
    """Mean jitter-buffer delay per frame over a window, in ms (what playout holds back)."""
    first: dict[str, float] = await page.evaluate(JITTER)
    await asyncio.sleep(window_s)
    second: dict[str, float] = await page.evaluate(JITTER)
    frames = second["emitted"] - first["emitted"]
    assert frames > 20, f"video stalled: {first} -> {second}"
    return 1000 * (second["delay"] - first["delay"]) / frames


async def open_viewer(server: Server, chromium: BrowserContext, room: str, name: str,
                      errors: list[str]) -> tuple[Page, float]:
    page = await chromium.new_page()
    collect_errors(page, name, errors)
    started = time.monotonic()
    await page.goto(page_url(server, "viewer", room, server.token(room, name, "subscribe")))
    await wait_frames(page, minimum=1)
    return page, time.monotonic() - started


async def test_a_fast_started_viewer_plays_as_live_as_one_that_waited(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    anchor: Any = await publish(server.url, "fast", server.token("fast", "anchor", "publish"),
                                PaintedVideoTrack(), ToneAudioTrack())
    node = server.app[NODE_KEY]
    try:
        await wait_for(lambda: "fast" in node.rooms and node.rooms["fast"].live, 10, "live")
        video = next(p for p in node.rooms["fast"].producers() if p.kind == "video")
        await asyncio.sleep(1.0)
        video._fast_start_s = 0  # this one waits for the keyframe it asks for, as before
        waited, waited_s = await open_viewer(server, chromium, "fast", "waited", errors)
        assert video.fast_starts == 0
        video._fast_start_s = 1.0
        fast, fast_s = await open_viewer(server, chromium, "fast", "fast", errors)
        assert video.fast_starts == 1, "the second viewer joined within a second of a keyframe"
        await asyncio.sleep(2.0)  # past the catch-up
        waited_ms = await jitter_buffer_ms(waited)
        fast_ms = await jitter_buffer_ms(fast)
        print(f"first frame: waited {waited_s:.3f} s, fast {fast_s:.3f} s; "
              f"jitter buffer: waited {waited_ms:.1f} ms, fast {fast_ms:.1f} ms")
        assert fast_ms < waited_ms + 50, (waited_ms, fast_ms)
        assert errors == []
    finally:
        await anchor.close()
