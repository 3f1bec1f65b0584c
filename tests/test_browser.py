"""The web pages in real Chromium: anchor publishes over WHIP, viewer plays over WHEP, retries."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page, Request

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_S = 20.0


def page_url(server: Server, page: str, room: str, token: str, **extra: str) -> str:
    return f"{server.url}/{page}?" + urlencode({"room": room, "token": token, **extra})


def collect_errors(page: Page, name: str, errors: list[str]) -> None:
    """Uncaught exceptions and unhandled rejections in the page fail the test."""
    page.on("pageerror", lambda exc: errors.append(f"{name}: {exc}"))


async def page_status(page: Page) -> str:
    state = await page.text_content("#state")
    error = await page.text_content("#error")
    return f"#state={state!r} #error={error!r}"


async def wait_state(page: Page, text: str, timeout_s: float = TIMEOUT_S) -> None:
    """Wait until #state reads exactly ``text``; on timeout, fail with what the page shows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await page.text_content("#state")) == text:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"#state never became {text!r} in {timeout_s}s: {await page_status(page)}")


async def wait_frames(
    page: Page, minimum: int = 30, timeout_s: float = TIMEOUT_S
) -> dict[str, Any]:
    """Poll window.shopcast.stats() until framesDecoded > minimum and still increasing."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {"framesDecoded": 0}
    while time.monotonic() < deadline:
        stats: dict[str, Any] = await page.evaluate("window.shopcast.stats()")
        if stats["framesDecoded"] > minimum and stats["framesDecoded"] > last["framesDecoded"] > 0:
            return stats
        last = stats
        await asyncio.sleep(0.25)
    pytest.fail(f"video did not play in {timeout_s}s: last stats {last}, {await page_status(page)}")


async def go_live(server: Server, chromium: BrowserContext, room: str, errors: list[str]) -> Page:
    anchor = await chromium.new_page()
    collect_errors(anchor, "anchor", errors)
    token = server.token(room, "anchor", "publish")
    await anchor.goto(page_url(server, "anchor", room, token, autostart="1"))
    await wait_state(anchor, "connected")
    return anchor


async def open_viewer(
    server: Server, chromium: BrowserContext, room: str, errors: list[str]
) -> Page:
    viewer = await chromium.new_page()
    collect_errors(viewer, "viewer", errors)
    await viewer.goto(page_url(server, "viewer", room, server.token(room, "viewer", "subscribe")))
    return viewer


def first_video_codec(sdp: str) -> str:
    """The encoding name of the first payload type on the m=video line of an SDP."""
    lines = sdp.splitlines()
    mline = next(line for line in lines if line.startswith("m=video"))
    first_pt = mline.split()[3]
    rtpmap = next(line for line in lines if line.startswith(f"a=rtpmap:{first_pt} "))
    return rtpmap.split()[1].split("/")[0]


async def test_anchor_publishes_and_viewer_plays(server: Server, chromium: BrowserContext) -> None:
    errors: list[str] = []
    anchor = await go_live(server, chromium, "browser1", errors)

    offer = await anchor.evaluate("window.shopcast.pc.localDescription.sdp")
    assert first_video_codec(offer) == "H264", "the anchor must offer H.264 first"
    sender = await anchor.evaluate(
        """() => window.shopcast.pc.getSenders()
                 .find((s) => s.track && s.track.kind === 'video').getParameters()"""
    )
    assert sender["degradationPreference"] == "maintain-resolution"
    assert 600_000 <= sender["encodings"][0]["maxBitrate"] <= 1_000_000

    viewer = await open_viewer(server, chromium, "browser1", errors)
    stats = await wait_frames(viewer)
    assert stats["frameWidth"] > 0 and stats["frameHeight"] > 0
    await wait_state(viewer, "playing", timeout_s=5)
    first_tile = "document.querySelector('#stage video') === document.getElementById('video')"
    assert await viewer.evaluate(first_tile)
    assert errors == []


async def test_viewer_waits_for_an_anchor_that_is_not_live(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    whep_posts: list[str] = []
    viewer = await chromium.new_page()
    collect_errors(viewer, "viewer", errors)

    def on_request(req: Request) -> None:
        if req.method == "POST" and "/whep/" in req.url:
            whep_posts.append(req.url)

    viewer.on("request", on_request)
    await viewer.goto(page_url(server, "viewer", "empty", server.token("empty", "v", "subscribe")))
    await wait_state(viewer, "waiting for the anchor")
    await asyncio.sleep(2.5)  # it retries every 2 s and stays waiting
    assert len(whep_posts) >= 2, whep_posts
    assert await viewer.text_content("#state") == "waiting for the anchor"
    assert await viewer.is_hidden("#error")
    assert errors == []


async def test_viewer_sees_the_anchor_leave_and_come_back(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    anchor = await go_live(server, chromium, "browser2", errors)
    viewer = await open_viewer(server, chromium, "browser2", errors)
    await wait_frames(viewer, minimum=10)

    await anchor.click("#stop")
    await wait_state(anchor, "closed")
    await wait_state(viewer, "anchor left, retrying")

    await anchor.click("#golive")
    await wait_state(anchor, "connected")
    await wait_state(viewer, "playing")
    await wait_frames(viewer, minimum=10)
    assert errors == []
