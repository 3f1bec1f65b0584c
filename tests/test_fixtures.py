"""The shared fixtures work, so a failure elsewhere is about the code, not the harness."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import aiohttp
import pytest
import redis.asyncio as aioredis

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

    from tests.conftest import Server


async def test_redis_server_answers_ping_set_get(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    client = aioredis.from_url(redis_server)
    try:
        assert await client.ping() is True
        key = f"fixture:{uuid.uuid4()}"
        assert await client.set(key, "value") is True
        assert await client.get(key) == b"value"
    finally:
        await client.aclose()


async def test_server_fixture_serves_healthz_and_checks_tokens(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
        headers = {
            "Authorization": f"Bearer {server.token('r1', 'v', 'subscribe')}",
            "Content-Type": "application/sdp",
        }
        async with http.post(f"{server.url}/whip/r1", data="v=0\r\n", headers=headers) as response:
            assert response.status == 403
            body = await response.json()
    assert body["error"]["code"] == "missing_grant"


@pytest.mark.browser
async def test_chromium_fixture_has_fake_camera_and_microphone(chromium: BrowserContext) -> None:
    # getUserMedia needs a secure context: serve a blank page as http://localhost from a route.
    page = chromium.pages[0] if chromium.pages else await chromium.new_page()
    await page.route("http://localhost/", lambda route: route.fulfill(body="<!doctype html>"))
    await page.goto("http://localhost/")
    kinds = await page.evaluate(
        """async () => {
            const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
            const kinds = stream.getTracks().map((t) => t.kind).sort();
            stream.getTracks().forEach((t) => t.stop());
            return kinds;
        }"""
    )
    assert kinds == ["audio", "video"]
