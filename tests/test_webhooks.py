"""Webhooks: signed bodies, retries with backoff, ordering, never blocking the caller."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from conftest import free_port
from rest_helpers import Api, join, signaling_of

from shopcast.config import Config
from signaling.webhooks import SIGNATURE_HEADER, Webhooks, WebhookSettings, sign, verify

pytest_plugins = ["store_fixtures"]


@dataclass
class Receiver:
    """A webhook endpoint that fails the first ``failures`` posts, then answers 204."""

    url: str = ""
    failures: int = 0
    delay_s: float = 0.0
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    attempts: list[float] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts.append(time.monotonic())
        await asyncio.sleep(self.delay_s)
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=500)
        self.posts.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)

    def events(self) -> list[str]:
        return [json.loads(body)["event"] for body, _ in self.posts]


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # echo -n '{"a":1}' | openssl dgst -sha256 -hmac k
    expected = "sha256=c3a92ff9e274cdcce27a58c15a78ec6dcbbdbd0038a87e7a11baef2028fd8bff"
    assert sign("k", b'{"a":1}') == expected
    assert verify("k", b'{"a":1}', sign("k", b'{"a":1}'))
    assert not verify("k", b'{"a":2}', sign("k", b'{"a":1}'))


async def test_retries_with_backoff_then_delivers_in_order(receiver: Receiver) -> None:
    receiver.failures = 2
    hooks = Webhooks(WebhookSettings([receiver.url], "s3cret", attempts=4, backoff_s=0.05))
    await hooks.start()
    try:
        hooks.emit("room_started", room={"name": "r"})
        hooks.emit("room_finished", room={"name": "r"})
        await asyncio.wait_for(hooks.drain(), 5)
    finally:
        await hooks.close()
    assert receiver.events() == ["room_started", "room_finished"]
    gaps = [b - a for a, b in zip(receiver.attempts, receiver.attempts[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # exponential backoff
    assert (hooks.stats.delivered, hooks.stats.retried, hooks.stats.failed) == (2, 2, 0)
    for body, headers in receiver.posts:
        assert verify("s3cret", body, headers[SIGNATURE_HEADER])
        assert headers["Content-Type"] == "application/json"
        assert headers["X-ShopCast-Event"] == json.loads(body)["event"]


async def test_gives_up_after_the_attempts(receiver: Receiver) -> None:
    receiver.failures = 100
    hooks = Webhooks(WebhookSettings([receiver.url], "s", attempts=3, backoff_s=0.01))
    await hooks.start()
    try:
        hooks.emit("room_started", room={"name": "r"})
        await asyncio.wait_for(hooks.drain(), 5)
    finally:
        await hooks.close()
    assert len(receiver.attempts) == 3 and hooks.stats.failed == 1


async def test_emit_never_waits_for_the_receiver(receiver: Receiver) -> None:
    receiver.delay_s = 0.5
    hooks = Webhooks(WebhookSettings([receiver.url], "s", queue_size=5))
    await hooks.start()
    try:
        started = time.perf_counter()
        for _ in range(10):
            hooks.emit("participant_joined", room={"name": "r"})
        assert time.perf_counter() - started < 0.05
        assert hooks.stats.dropped == 5  # a full queue drops instead of blocking
    finally:
        await hooks.close()


@pytest.fixture
def config(config: Config, backend: str, prefix: str, receiver: Receiver) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    config.webhook_urls = [receiver.url]
    config.webhook_secret = "hook-key"
    return config


async def test_lifecycle_webhooks(server: Any, receiver: Receiver) -> None:
    signaling = signaling_of(server)
    await join(signaling, "w1", "P1", "anchor", "whip", tracks=("video",))
    signaling.reporter.track_unpublished("w1", "P1", "TR_P1_video")
    signaling.reporter.left("w1", "P1")
    await signaling.reporter.drain()
    await asyncio.wait_for(signaling.webhooks.drain(), 5)
    assert receiver.events() == [
        "room_started", "participant_joined", "track_published", "track_unpublished",
        "participant_left", "room_finished",
    ]
    bodies = [json.loads(body) for body, _ in receiver.posts]
    assert bodies[1]["participant"]["identity"] == "anchor"
    assert bodies[2]["track"]["sid"] == "TR_P1_video" and bodies[2]["room"]["name"] == "w1"
    assert all(verify("hook-key", b, h[SIGNATURE_HEADER]) for b, h in receiver.posts)
    assert len({b["id"] for b in bodies}) == len(bodies)


async def test_closing_a_room_reports_everyone(server: Any, receiver: Receiver) -> None:
    signaling = signaling_of(server)
    admin = Api(server.url + "/api/v1", server.token("*", "ops", "admin"))
    await admin.post("/rooms", {"name": "w2"})
    await join(signaling, "w2", "P1", "anchor", "whip", tracks=("audio",))
    await join(signaling, "w2", "V1", "viewer")
    assert (await admin.delete("/rooms/w2"))[0] == 204
    await asyncio.wait_for(signaling.webhooks.drain(), 5)
    assert receiver.events() == [
        "room_started", "participant_joined", "track_published", "participant_joined",
        "track_unpublished", "participant_left", "participant_left", "room_finished",
    ]
