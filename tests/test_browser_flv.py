"""The viewer page on HTTP-FLV in real Chromium: mpegts.js (served locally) plays the room's
FLV stream when the URL asks for it, and the page falls back to FLV on its own when the browser
has no WebRTC or WebRTC does not start playing.

The anchor is aiortc (WHIP, painted H.264 + Opus), so the FLV path is the server's remux and
Opus->AAC; Chromium decodes it through Media Source Extensions.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import pytest
from flv_helpers import start_anchor

from sfu.flv.manager import FLV_KEY

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page, Request, Route

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_S = 20.0
# The page gives WebRTC 5 s after a live answer; then FLV must start like a direct FLV join.
FALLBACK_TIMEOUT_S = 5.0 + TIMEOUT_S
NO_WEBRTC = "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;"




def viewer_url(server: Server, room: str, **extra: str) -> str:
    token = server.token(room, "viewer", "subscribe")
    return f"{server.url}/viewer?" + urlencode({"room": room, "token": token, **extra})


class PageLog:
    """Uncaught page errors, WHEP offers and every URL the page requested."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.whep_posts: list[str] = []
        self.urls: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("request", self._request)

    def _request(self, req: Request) -> None:
        self.urls.append(req.url)
        if req.method == "POST" and "/whep/" in req.url:
            self.whep_posts.append(req.url)


async def page_status(page: Page) -> str:
    fields = {sel: await page.text_content(sel) for sel in ("#transport", "#state", "#error")}
    flv = await page.evaluate("window.shopcast && window.shopcast.flv")
    return f"{fields} flv={flv}"


async def wait_text(page: Page, selector: str, text: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await page.text_content(selector)) == text:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"{selector} never read {text!r} in {timeout_s}s: {await page_status(page)}")


async def flv_stats(page: Page) -> dict[str, Any]:
    """window.shopcast.flv plus what the <video> element itself says."""
    stats: dict[str, Any] | None = await page.evaluate(
        """() => {
             const s = window.shopcast.flv;
             if (!s) return null;
             const v = document.getElementById('video');
             const q = v.getVideoPlaybackQuality();
             return {...s, elementTime: v.currentTime, elementFrames: q.totalVideoFrames,
                     paused: v.paused, src: v.src};
           }"""
    )
    assert stats is not None, f"not playing FLV: {await page_status(page)}"
    return stats


async def assert_flv_plays(page: Page, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """#transport says flv, #state says playing, and over 2 s both the playback clock and the
    decoded frame count move on (a frozen picture or a stalled buffer fails)."""
    await wait_text(page, "#transport", "flv", timeout_s)
    await wait_text(page, "#state", "playing", timeout_s)
    first = await flv_stats(page)
    await asyncio.sleep(2.0)
    second = await flv_stats(page)
    assert second["currentTime"] >= first["currentTime"] + 1.0, (first, second)
    assert second["decodedFrames"] >= first["decodedFrames"] + 20, (first, second)  # ~30 fps
    assert second["elementFrames"] >= first["elementFrames"] + 20, (first, second)
    assert second["elementTime"] == pytest.approx(second["currentTime"], abs=0.5)
    assert not second["paused"] and second["src"].startswith("blob:"), second  # MSE
    assert (second["width"], second["height"]) == (640, 360), second
    # Live, not a growing buffer: the player keeps at most ~1.5 s ahead of playback.
    assert second["bufferedAhead"] < 2.0, second
    return second


def assert_local_only(server: Server, urls: list[str]) -> None:
    """Every request went to this server (mpegts.js included): no CDN."""
    origin = urlsplit(server.url)
    foreign = [
        u for u in urls
        if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != origin.netloc
    ]
    assert foreign == []
    assert any(urlsplit(u).path == "/vendor/mpegts.js" for u in urls), urls


async def test_viewer_forced_to_flv_plays(server: Server, chromium: BrowserContext) -> None:
    anchor = await start_anchor(server, "bflv1")
    try:
        page = await chromium.new_page()
        log = PageLog(page)
        await page.goto(viewer_url(server, "bflv1", transport="flv"))
        stats = await assert_flv_plays(page)
        assert stats["url"].startswith(f"{server.url}/live/bflv1.flv?ticket="), stats  # the plan's
        assert log.whep_posts == []  # ?transport=flv: no WebRTC attempt at all
        assert server.app[FLV_KEY].outputs["bflv1"].stats()["readers"] == 1
        assert await page.evaluate("window.shopcast.transport") == "flv"
        # the existing stats() helper reports FLV frames too
        assert (await page.evaluate("window.shopcast.stats()"))["framesDecoded"] > 0
        assert_local_only(server, log.urls)
        assert log.errors == []
    finally:
        await anchor.close()


async def test_viewer_without_webrtc_falls_back_to_flv(
    server: Server, chromium: BrowserContext
) -> None:
    anchor = await start_anchor(server, "bflv2")
    try:
        page = await chromium.new_page()
        await page.add_init_script(NO_WEBRTC)
        log = PageLog(page)
        await page.goto(viewer_url(server, "bflv2"))
        await assert_flv_plays(page)
        assert await page.evaluate("typeof window.RTCPeerConnection") == "undefined"
        assert "no WebRTC" in await page.evaluate("window.shopcast.flvReason")
        assert log.whep_posts == []
        assert_local_only(server, log.urls)
        assert log.errors == []
    finally:
        await anchor.close()


async def test_viewer_falls_back_to_flv_when_webrtc_does_not_play(
    server: Server, chromium: BrowserContext
) -> None:
    """WHEP answers, but its ICE candidates are unreachable (as behind a UDP-blocking firewall):
    nothing plays within 5 s, so the page drops the WebRTC session and plays FLV."""
    anchor = await start_anchor(server, "bflv3")
    try:
        page = await chromium.new_page()
        log = PageLog(page)

        async def unreachable_answer(route: Route) -> None:
            response = await route.fetch()
            sdp = await response.text()
            if response.status == 201:  # TEST-NET-1: routable nowhere
                sdp = re.sub(r"(a=candidate:\S+ \d+ \S+ \d+ )\S+", r"\g<1>192.0.2.1", sdp)
            await route.fulfill(response=response, body=sdp)

        await page.route(re.compile(r".*/whep/bflv3$"), unreachable_answer)
        started = time.monotonic()
        await page.goto(viewer_url(server, "bflv3"))
        await wait_text(page, "#transport", "webrtc")
        await wait_text(page, "#transport", "flv", FALLBACK_TIMEOUT_S)
        switched_s = time.monotonic() - started
        assert 4.5 <= switched_s <= 12, switched_s  # the 5 s watchdog, not an ICE timeout
        assert "did not play" in await page.evaluate("window.shopcast.flvReason")
        await assert_flv_plays(page)
        assert len(log.whep_posts) == 1, log.whep_posts  # then FLV for good
        assert await page.evaluate("window.shopcast.pc") is None
        assert server.app[FLV_KEY].outputs["bflv3"].stats()["readers"] == 1
        assert log.errors == []
    finally:
        await anchor.close()


async def test_flv_viewer_waits_for_the_anchor(server: Server, chromium: BrowserContext) -> None:
    """Before the anchor is live the FLV endpoint answers 404/503 not_live: the page says it is
    waiting, retries, and plays once the anchor goes live."""
    page = await chromium.new_page()
    log = PageLog(page)
    await page.goto(viewer_url(server, "bflv4", transport="flv"))
    await wait_text(page, "#state", "waiting for the anchor")
    await asyncio.sleep(2.5)  # retries every 2 s, still waiting, no error shown
    assert await page.text_content("#state") == "waiting for the anchor"
    assert await page.is_hidden("#error")
    asks = [u for u in log.urls if "/live/bflv4.flv" in u or "/rooms/bflv4/playback" in u]
    assert len(asks) >= 2, asks  # the plan (no room yet, so no ticket), then FLV once there is
    anchor = await start_anchor(server, "bflv4")
    try:
        await assert_flv_plays(page)
        assert log.errors == []
    finally:
        await anchor.close()
