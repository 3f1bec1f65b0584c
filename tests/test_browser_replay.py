"""The replay page in real Chromium: a 30 s recording whose product was pinned at 10 s and
unpinned at 20 s; seeking to 12 s shows the product card, 22 s does not, and while the sale
runs the card's buy button places an order through the order API. With --timeline-chat, the
chat said at 6 s is listed from 6 s on. Once the room is closed the replay still shows the card,
its button with nothing to sell.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from conftest import loopback_config
from rest_helpers import Api

from shopcast.config import Config
from signaling.claims import Claims, Grant
from signaling.service import SIGNALING_KEY

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "replayroom"
SKU = "mug"
TIMEOUT_MS = 15_000
CARD = f'.product-card[data-sku="{SKU}"]'
CHAT = "<b>only</b> 3 left"  # shown as text, never as markup


async def page_status(page: Page) -> dict[str, Any]:
    status: dict[str, Any] = await page.evaluate(
        """() => { const v = document.getElementById('video');
                   return { state: document.getElementById('state').textContent,
                            error: document.getElementById('error').textContent,
                            readyState: v.readyState, mediaError: v.error && v.error.message,
                            currentTime: v.currentTime }; }""")
    return status


async def seek(page: Page, t: float) -> None:
    await page.evaluate(
        """(t) => new Promise((resolve) => {
             const v = document.getElementById('video');
             v.addEventListener('seeked', () => resolve(), { once: true });
             v.currentTime = t;
           })""", t)


async def open_replay(server: Server, chromium: BrowserContext, recording_id: str,
                      errors: list[str], *, from_list: bool = False) -> Page:
    """The replay page of the recording; ``from_list``: reached through the room's list."""
    page = await chromium.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    query = {"room": ROOM, "token": server.token(ROOM, "buyer", "subscribe")}
    if from_list:
        await page.goto(f"{server.url}/replay?" + urlencode(query))
        await page.click(f'#recordings a[data-id="{recording_id}"]', timeout=TIMEOUT_MS)
    else:
        await page.goto(f"{server.url}/replay?" + urlencode({**query,
                                                              "recording": recording_id}))
    try:
        await page.wait_for_function(
            "document.getElementById('state').textContent === 'ready' && "
            "document.getElementById('video').readyState >= 1", timeout=TIMEOUT_MS)
    except Exception as exc:
        raise AssertionError(f"replay page not ready: {await page_status(page)}") from exc
    return page


async def replay_checks(server: Server, chromium: BrowserContext, recording_id: str) -> None:
    """Seek to 12 s: the card; 22 s: none; back at 12 s the buy button orders once."""
    errors: list[str] = []
    page = await open_replay(server, chromium, recording_id, errors)
    duration = await page.evaluate("document.getElementById('video').duration")
    assert 29.0 <= duration <= 31.0, duration

    await seek(page, 12.0)
    await page.wait_for_selector(CARD, state="visible", timeout=TIMEOUT_MS)
    assert await page.text_content(f"{CARD} .product-title") == "Replay mug"
    assert await page.text_content("#chat-list .chat-text") == CHAT  # said at 6 s
    await seek(page, 22.0)
    await page.wait_for_selector(CARD, state="detached", timeout=TIMEOUT_MS)
    assert await page.evaluate("document.querySelectorAll('.product-card').length") == 0
    assert await page.text_content("#chat-list .chat-text") == CHAT
    await seek(page, 3.0)
    await page.wait_for_selector("#chat-list", state="hidden", timeout=TIMEOUT_MS)
    assert await page.query_selector(CARD) is None

    await seek(page, 12.0)
    buy = f"{CARD} button.buy"
    await page.wait_for_selector(f"{buy}[data-state=open]:not([disabled])", timeout=TIMEOUT_MS)
    await page.click(buy)
    await page.wait_for_function(
        f"document.querySelector('{CARD} .order-status')?.textContent.startsWith('Order ')",
        timeout=TIMEOUT_MS)
    api = Api(server.url, server.token(ROOM, "buyer", "subscribe"))
    status, body = await api.get(f"/api/v1/rooms/{ROOM}/orders")
    assert status == 200 and [(o["sku"], o["buyer"]) for o in body["orders"]] == [(SKU, "buyer")]
    assert errors == []


async def shop_room(server: Server) -> Api:
    admin = Api(server.url, server.token("*", "host", "admin"))
    assert (await admin.post("/api/v1/rooms", {"name": ROOM}))[0] == 201
    status, _ = await admin.post(f"/api/v1/rooms/{ROOM}/products",
                                 {"sku": SKU, "title": "Replay mug", "price": 1500})
    assert status == 201
    return admin


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Every room recorded into the test's directory, its chat kept in the timeline."""
    return loopback_config(tmp_path, workers=0, record=True, record_dir=str(tmp_path / "rec"),
                           timeline_chat=True)


async def at_recording_time(started_at: float, t: float) -> None:
    await asyncio.sleep(max(0.0, started_at + t - time.time()))


async def only_recording(admin: Api, finished: bool, limit_s: float) -> dict[str, Any]:
    """The room's one recording once it is (or is not yet) finished."""
    deadline = time.monotonic() + limit_s
    while True:
        status, body = await admin.get(f"/api/v1/rooms/{ROOM}/recordings")
        assert status == 200, body
        found = body["recordings"]
        if len(found) == 1 and found[0]["finished"] == finished:
            recording: dict[str, Any] = found[0]
            return recording
        assert len(found) <= 1 and time.monotonic() < deadline, (finished, found)
        await asyncio.sleep(0.1)


async def test_replay_of_a_recorded_room(server: Server, chromium: BrowserContext) -> None:
    """A 30 s room (a real aiortc WHIP anchor, the real recorder) whose product is pinned at
    10 s and unpinned at 20 s of the recording, with a sale running since 11 s."""
    from loadtest.clients import publish
    from loadtest.media import PaintedVideoTrack, ToneAudioTrack

    admin = await shop_room(server)
    anchor = await publish(server.url, ROOM, server.token(ROOM, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    try:
        started_at = (await only_recording(admin, finished=False, limit_s=15))["started_at"]
        room = f"/api/v1/rooms/{ROOM}"
        await at_recording_time(started_at, 6.0)
        host = Claims(identity="anchor", room=ROOM, grants=frozenset({Grant.ADMIN}))
        await server.app[SIGNALING_KEY].live.chat.send(ROOM, host, CHAT)
        await at_recording_time(started_at, 10.0)
        assert (await admin.post(room + "/pin", {"sku": SKU}))[0] == 200
        await at_recording_time(started_at, 11.0)
        assert (await admin.post(room + "/sales", {"sku": SKU, "stock": 3,
                                                   "duration_s": 600}))[0] == 201
        await at_recording_time(started_at, 20.0)
        assert (await admin.delete(room + "/pin"))[0] == 200
        await at_recording_time(started_at, 30.0)
    finally:
        await anchor.close()
    recording = await only_recording(admin, finished=True, limit_s=15)
    assert 29.0 <= recording["duration_s"] <= 31.0, recording
    viewer = Api(server.url, server.token(ROOM, "buyer", "subscribe"))
    status, timeline = await viewer.get(f"/api/v1/recordings/{recording['id']}/timeline")
    assert status == 200, timeline
    pins = [(e["type"], e["t"]) for e in timeline["events"] if e["type"].startswith("product_")]
    assert [kind for kind, _ in pins] == ["product_pinned", "product_unpinned"], timeline
    # sent at 10 s and 20 s; a loaded machine may take a while, the seeks at 12 and 22 s may not
    assert 10.0 <= pins[0][1] <= 11.5 and 20.0 <= pins[1][1] <= 21.5, pins
    await replay_checks(server, chromium, recording["id"])

    # after the show: the room closed, its replay (from the room's list of recordings) still
    # shows the card, with nothing to buy
    assert (await admin.delete(f"/api/v1/rooms/{ROOM}"))[0] == 204
    errors: list[str] = []
    page = await open_replay(server, chromium, recording["id"], errors, from_list=True)
    await seek(page, 12.0)
    await page.wait_for_selector(f"{CARD} button.buy[data-state=not_on_sale][disabled]",
                                 timeout=TIMEOUT_MS)
    await seek(page, 22.0)
    await page.wait_for_selector(CARD, state="detached", timeout=TIMEOUT_MS)
    assert errors == []
