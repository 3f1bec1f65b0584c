"""Twenty viewers' QoE reports in /health, /metrics and the anchor console's audience line,
on Redis (the memory backend's aggregation is covered server-side in test_qoe): 18 aiortc
viewers report their receivers' counters over the `events` data channel, a Chromium viewer
page on WebRTC and one on FLV send their own reports (web/js/qoe.js, getStats and the <video>
element) over /ws/events."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
import test_qoe
from flv_helpers import start_anchor
from test_qoe import get, receiver_report, samples
from waiting import wait_for

from loadtest.clients import Viewer, play

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest_plugins = ["store_fixtures"]

ROOM = "qoe"
AIORTC_VIEWERS = 18
INTERVAL_MS = 2500  # within the server's one report per 2 s per identity
TIMEOUT_S = 30.0
config = test_qoe.config  # the server on each backend

async def open_page(server: Any, chromium: BrowserContext, page: str, errors: list[str],
                    token: str, **query: str) -> Page:
    tab = await chromium.new_page()
    tab.on("pageerror", lambda exc: errors.append(f"{page}: {exc}"))
    await tab.goto(f"{server.url}/{page}?" + urlencode({"room": ROOM, "token": token, **query}))
    return tab


async def last_report(page: Page) -> dict[str, Any] | None:
    report: dict[str, Any] | None = await page.evaluate(
        "window.shopcastQoe && window.shopcastQoe.last")
    return report


async def wait_report(page: Page, transport: str) -> dict[str, Any]:
    """The page's first report on ``transport`` that shows frames decoded."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        report = await last_report(page)
        if report and report["transport"] == transport and report["fps"] > 0:
            return report
        await asyncio.sleep(0.2)
    state = await page.evaluate("[window.shopcast.transport, window.shopcast.state]")
    pytest.fail(f"no {transport} report with frames in {TIMEOUT_S}s: last "
                f"{await last_report(page)}, page {state}")


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_twenty_viewers_reports(server: Any, chromium: BrowserContext) -> None:
    errors: list[str] = []
    anchor = await start_anchor(server, ROOM)
    viewers: list[Viewer] = []
    try:
        webrtc_page = await open_page(server, chromium, "viewer", errors,
                                      server.token(ROOM, "chrome-webrtc", "subscribe"),
                                      transport="webrtc", qoe_interval_ms=str(INTERVAL_MS))
        flv_page = await open_page(server, chromium, "viewer", errors,
                                   server.token(ROOM, "chrome-flv", "subscribe"),
                                   transport="flv", qoe_interval_ms=str(INTERVAL_MS))
        console = await open_page(server, chromium, "anchor", errors,
                                  server.token(ROOM, "anchor", "publish", "admin"),
                                  health_interval_ms="1000")
        # the pages first (on a loaded machine, 18 more viewers slow their start), then aiortc
        webrtc = await wait_report(webrtc_page, "webrtc")
        assert webrtc["width"] > 0 and webrtc["height"] > 0
        assert webrtc["jitter_buffer_ms"] is not None and webrtc["jitter_buffer_ms"] >= 0
        assert webrtc["packets_received"] > 0 and webrtc["decode_ms"] is not None
        assert webrtc["cores"] >= 1
        flv = await wait_report(flv_page, "flv")
        assert flv["width"] > 0 and flv["buffer_s"] >= 0 and flv["freezes"] >= 0
        assert "jitter_buffer_ms" not in flv or flv["jitter_buffer_ms"] is None

        started = time.monotonic()
        viewers = [await play(server.url, ROOM, server.token(ROOM, f"w{i}", "subscribe"),
                              decode=False, events=True) for i in range(AIORTC_VIEWERS)]
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), TIMEOUT_S,
                       "state on every data channel")
        await wait_for(lambda: all(v.frames > 10 for v in viewers), TIMEOUT_S,
                       "frames at the aiortc viewers")
        for viewer in viewers:
            viewer.events.send(receiver_report(viewer, started))

        admin = server.token(ROOM, "ops", "admin")
        health: dict[str, Any] = {}
        for _ in range(int(TIMEOUT_S * 10)):
            status, health = await get(server, f"/api/v1/rooms/{ROOM}/health", admin)
            assert status == 200, health
            if health["viewers_reporting"] >= 20:
                break
            await asyncio.sleep(0.1)
        assert health["viewers_reporting"] == 20, health
        assert health["transports"] == {"webrtc": 19, "flv": 1}
        assert health["layers"] == {"single": 20}
        assert health["fps"]["p50"] > 0
        assert health["jitter_buffer_ms"]["p50"] is not None  # the Chromium WebRTC page's
        assert health["flv_buffer_s"]["p50"] is not None  # the FLV page's
        assert 0 <= health["stall_ratio"] <= 1

        _, text = await get(server, "/metrics")
        lines = text.splitlines()
        results = samples(lines, "shopcast_qoe_reports_total")
        assert results['{result="accepted"}'] >= 20
        assert results['{result="malformed"}'] == 0
        assert results['{result="too_large"}'] == 0
        assert results['{result="rate_limited"}'] == 0
        counts = samples(lines, "shopcast_qoe_fps_count")
        assert counts['{transport="webrtc"}'] >= 19 and counts['{transport="flv"}'] >= 1
        assert sum(counts.values()) == results['{result="accepted"}']

        await console.wait_for_function(
            "(document.querySelector('#audience-health') || {}).dataset?.reporting === '20'",
            timeout=TIMEOUT_S * 1000)
        line = await console.text_content("#audience-health") or ""
        assert line.startswith("Audience: 20 reporting") and "webrtc 19" in line, line
        assert errors == []
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()
