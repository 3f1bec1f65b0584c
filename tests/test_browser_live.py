"""The live pages in real Chromium: the anchor console adds and pins a product and starts a
sale; the viewer page shows the card, buys with one click (the order is in GET /orders); a chat
message containing <script> shows as text on both pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest
from rest_helpers import Api

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "shop"
TIMEOUT_MS = 15_000


async def open_page(server: Any, chromium: BrowserContext, page: str, token: str,
                    errors: list[str]) -> Page:
    tab = await chromium.new_page()
    tab.on("pageerror", lambda exc: errors.append(f"{page}: {exc}"))
    await tab.goto(f"{server.url}/{page}?" + urlencode({"room": ROOM, "token": token}))
    return tab


async def test_pin_buy_and_chat_as_text(server: Any, chromium: BrowserContext) -> None:
    errors: list[str] = []
    anchor = await open_page(server, chromium, "anchor",
                             server.token(ROOM, "anchor", "publish", "admin"), errors)
    viewer = await open_page(server, chromium, "viewer",
                             server.token(ROOM, "alice", "subscribe", "chat"), errors)

    await anchor.fill("#product-sku", "tee")
    await anchor.fill("#product-title", "Cotton T-shirt")
    await anchor.fill("#product-price", "19.99")
    await anchor.fill("#product-currency", "EUR")
    await anchor.click("#product-form button[type=submit]")
    await anchor.wait_for_selector('#console-products li[data-sku="tee"]', timeout=TIMEOUT_MS)
    await anchor.click('button.pin[data-sku="tee"]')

    await viewer.wait_for_selector("#product-card:not([hidden])", timeout=TIMEOUT_MS)
    assert await viewer.text_content("#product-title") == "Cotton T-shirt"
    assert "19.99" in (await viewer.text_content("#product-price") or "")
    assert await viewer.is_disabled("#buy")

    await anchor.select_option("#sale-sku", "tee")
    await anchor.fill("#sale-stock", "5")
    await anchor.fill("#sale-limit", "1")
    await anchor.fill("#sale-duration", "120")
    await anchor.click("#sale-start")
    await viewer.wait_for_selector("#buy:not([disabled])", timeout=TIMEOUT_MS)
    assert "5 left" in (await viewer.text_content("#sale-stock") or "")
    assert "ends in" in (await viewer.text_content("#sale-countdown") or "")

    await viewer.click("#buy")
    await viewer.wait_for_function(
        "document.querySelector('#order-status').textContent.startsWith('Order OR_')",
        timeout=TIMEOUT_MS)
    status, body = await Api(server.url, server.token(ROOM, "ops", "admin")).get(
        f"/api/v1/rooms/{ROOM}/orders")
    assert status == 200
    orders = body["orders"]
    assert [(o["buyer"], o["sku"], o["qty"], o["total"]) for o in orders] == [
        ("alice", "tee", 1, 1999)]
    assert orders[0]["id"] in (await viewer.text_content("#order-status") or "")
    await viewer.wait_for_function(
        "document.querySelector('#sale-stock').textContent.includes('4 left')",
        timeout=TIMEOUT_MS)

    text = "<script>window.pwned = 1</script><b>bold</b><img src=x onerror='window.pwned=2'>"
    await viewer.fill("#chat-input", text)
    await viewer.click("#chat-send")
    for page, selector in ((viewer, "#chat-list"), (anchor, "#console-chat")):
        item = page.locator(f"{selector} .chat-text").last
        await item.wait_for(timeout=TIMEOUT_MS)
        assert await item.text_content() == text
        assert await page.evaluate(
            f"document.querySelectorAll('{selector} script, {selector} b, {selector} img')"
            ".length") == 0
        assert await page.evaluate("window.pwned") is None

    await viewer.click("#like")
    await anchor.wait_for_timeout(100)
    assert await viewer.text_content("#like-total") == "1"
    assert errors == []
