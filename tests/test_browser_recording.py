"""A recording cut into several segments plays in real Chromium as the one stream
``GET /api/v1/recordings/{id}`` serves: a plain ``<video src>`` with ``?token=`` knows its whole
duration, seeks into a later segment and decodes there, and plays on across a segment
boundary (the joined stream has one initialization and every fragment on one clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Server, loopback_config
from playwright.async_api import BrowserContext
from test_recording import record_a_room

from shopcast.config import Config

TIMEOUT_MS = 15_000


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, record=True,
                           record_dir=str(tmp_path / "recordings"), record_segment_s=2)


async def video_state(page: Any) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate(
        """() => { const v = document.querySelector('video');
                   return { t: v.currentTime, duration: v.duration, ready: v.readyState,
                            error: v.error && v.error.message,
                            frames: v.getVideoPlaybackQuality().totalVideoFrames }; }""")
    return state


@pytest.mark.slow
async def test_chromium_plays_and_seeks_a_recording_of_several_segments(
    server: Server, chromium: BrowserContext
) -> None:
    room = "recbrowser"
    recording = await record_a_room(server, room, 9)
    segments = recording["segments"]
    assert len(segments) >= 3, segments
    later = segments[-2]  # a segment served without its own copy of the initialization

    page = await chromium.new_page()
    src = (f"{server.url}/api/v1/recordings/{recording['id']}"
           f"?token={server.token(room, 'viewer', 'subscribe')}")
    await page.set_content(f'<video muted preload="auto" src="{src}"></video>')
    await page.wait_for_function("document.querySelector('video').readyState >= 1",
                                 timeout=TIMEOUT_MS)
    state = await video_state(page)
    assert abs(state["duration"] - recording["duration_s"]) < 1, (state, recording)

    target = later["start_s"] + later["duration_s"] / 2
    await page.evaluate(
        """(t) => new Promise((resolve) => {
             const v = document.querySelector('video');
             v.addEventListener('seeked', () => resolve(), { once: true });
             v.currentTime = t;
           })""", target)
    await page.wait_for_function("document.querySelector('video').readyState >= 2",
                                 timeout=TIMEOUT_MS)
    state = await video_state(page)
    assert abs(state["t"] - target) < 0.5 and state["error"] is None, state

    boundary = segments[1]["start_s"]  # play from before segment 1 to past its start
    await page.evaluate(
        """(t) => { const v = document.querySelector('video'); v.currentTime = t;
                    return v.play(); }""", boundary - 1.0)
    await page.wait_for_function(
        f"document.querySelector('video').currentTime > {boundary + 1.0}", timeout=TIMEOUT_MS)
    state = await video_state(page)
    assert state["error"] is None and state["frames"] > 0, state
