"""Co-hosting in real Chromium: the anchor page invites, the co-host page (watching the anchor
while it waits) accepts and goes on stage, each page shows the other's video, the viewer page
shows both, and removing the co-host takes it off every page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from test_browser import collect_errors, go_live, page_url, wait_state
from waiting import wait_for

from sfu.node import NODE_KEY

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def wait_page(page: Page, check: Callable[[Any], bool], script: str, what: str,
                    timeout_s: float = 20.0) -> Any:
    """Poll ``script`` in the page until ``check`` accepts its value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if check(value):
            return value
        await asyncio.sleep(0.25)
    error = await page.text_content("#error")
    pytest.fail(f"{what}: not within {timeout_s}s; last {value!r}, #error={error!r}")


def decoding(minimum: int) -> Callable[[Any], bool]:
    return lambda tiles: len(tiles) == 1 and tiles[0]["frames"] > minimum and tiles[0]["width"] > 0


async def growing(page: Page, script: str, what: str) -> None:
    first = await wait_page(page, decoding(10), script, what)
    await wait_page(page, decoding(first[0]["frames"] + 15), script, what + " (still playing)")


async def test_anchor_and_cohost_pages_show_each_other(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    anchor = await go_live(server, chromium, "lianmai", errors)
    cohost: Page = await chromium.new_page()
    collect_errors(cohost, "cohost", errors)
    guest = server.token("lianmai", "guest", "cohost", "subscribe")
    await cohost.goto(page_url(server, "cohost", "lianmai", guest, autojoin="1"))
    await wait_state(cohost, "waiting for an invitation")
    # waiting: the guest already watches the anchor; the anchor sees nobody yet
    await growing(cohost, "window.shopcast.others", "co-host page shows the anchor")
    assert await anchor.evaluate("window.shopcast.cohosts") == []

    await anchor.fill("#cohost-id", "guest")
    await anchor.click("#invite")
    await wait_state(cohost, "on stage")
    await growing(anchor, "window.shopcast.cohosts", "anchor page shows the co-host")
    await growing(cohost, "window.shopcast.others", "co-host page still shows the anchor")

    viewer = await chromium.new_page()
    collect_errors(viewer, "viewer", errors)
    await viewer.goto(page_url(server, "viewer", "lianmai",
                               server.token("lianmai", "v", "subscribe"), transport="webrtc"))
    visible = "document.querySelectorAll('#stage .tile:not([hidden]) video').length"
    await wait_page(viewer, lambda n: n == 2, visible, "viewer shows anchor and co-host")

    await anchor.click("#remove")
    await wait_state(cohost, "removed by the anchor")
    await wait_page(anchor, lambda tiles: tiles == [], "window.shopcast.cohosts",
                    "the co-host's tile leaves the anchor page")
    await wait_page(viewer, lambda n: n == 1, visible, "the viewer is back to the anchor alone")
    assert not errors, errors




async def test_pages_can_signal_over_the_websocket(
    server: Server, chromium: BrowserContext
) -> None:
    """?signaling=ws: the anchor publishes and the viewer plays with offers and answers over
    /ws (no WHIP/WHEP request at all), then stopping closes the legs over the same socket."""
    from signaling.ws_signaling import WS_KEY

    errors: list[str] = []
    http_signaling: list[str] = []
    anchor: Page = await chromium.new_page()
    viewer: Page = await chromium.new_page()
    for page, name in ((anchor, "anchor"), (viewer, "viewer")):
        collect_errors(page, name, errors)
        page.on("request", lambda r: http_signaling.append(r.url)
                if "/whip/" in r.url or "/whep/" in r.url else None)
    await anchor.goto(page_url(server, "anchor", "wsroom", server.token("wsroom", "anchor",
                                                                          "publish"),
                               autostart="1", signaling="ws"))
    await wait_state(anchor, "connected")
    await viewer.goto(page_url(server, "viewer", "wsroom", server.token("wsroom", "v",
                                                                          "subscribe"),
                               transport="webrtc", signaling="ws"))
    await wait_state(viewer, "playing")
    await wait_page(viewer, lambda s: s["framesDecoded"] > 30, "window.shopcast.stats()",
                    "viewer decodes over /ws signaling")
    sessions = server.app[WS_KEY].sessions
    assert len(sessions) == 2 and all(s.legs for s in sessions.values())
    await anchor.click("#stop")
    await wait_page(anchor, lambda n: n == 0,
                    "window.shopcast.resource === null ? 0 : 1", "anchor stopped")
    node_legs = server.app[NODE_KEY].sessions
    await wait_page(viewer, lambda _: not any(leg.role == "publisher" for leg in
                                              node_legs.values()), "1", "publisher leg closed")
    assert http_signaling == [], http_signaling
    assert not errors, errors


async def test_flv_viewer_page_keeps_playing_through_the_cohost_mix(
    server: Server, chromium: BrowserContext
) -> None:
    """The real player (mpegts.js in Chromium): the FLV picture widens to the side-by-side mix
    when a co-host joins and narrows back when it leaves, and playback never stops."""
    from test_cohost import invite

    from loadtest.clients import publish
    from loadtest.media import PaintedVideoTrack, ToneAudioTrack
    from sfu.flv.manager import FLV_KEY

    errors: list[str] = []
    room, outputs = "flvmix", server.app[FLV_KEY].outputs
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    cohost = None
    try:
        await wait_for(lambda: room in outputs and outputs[room].live, 10, "FLV live")
        page: Page = await chromium.new_page()
        collect_errors(page, "viewer", errors)
        await page.goto(page_url(server, "viewer", room, server.token(room, "v", "subscribe"),
                                 transport="flv"))
        flv = "window.shopcast.flv"
        first = await wait_page(page, lambda s: bool(s) and s["decodedFrames"] > 20
                                and s["width"] == 640, flv, "FLV plays the anchor", 30)
        await invite(server, room, "guest")
        cohost = await publish(server.url, room, server.token(room, "guest", "cohost"),
                               PaintedVideoTrack(colour="blue"), ToneAudioTrack())
        mixed = await wait_page(page, lambda s: s["width"] == 1280, flv, "the mix plays", 30)
        await wait_page(page, lambda s: s["decodedFrames"] > mixed["decodedFrames"] + 30, flv,
                        "the mix keeps playing", 20)
        await cohost.close()
        cohost = None
        back = await wait_page(page, lambda s: s["width"] == 640, flv, "back to the anchor", 30)
        await wait_page(page, lambda s: s["decodedFrames"] > back["decodedFrames"] + 30, flv,
                        "the anchor keeps playing", 20)
        assert back["decodedFrames"] > first["decodedFrames"]
        assert await page.text_content("#transport") == "flv"
        assert not errors, errors
    finally:
        if cohost is not None:
            await cohost.close()
        await anchor.close()
