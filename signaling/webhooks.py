"""Webhooks: room and participant lifecycle events POSTed to configured URLs.

The body is JSON: ``{"id", "event", "created_at", "room": {...}, "participant": {...},
"track": {...}}`` (the last two when they apply). The ``X-ShopCast-Signature`` header is
``sha256=`` + hex HMAC-SHA256 of the exact body bytes with the webhook secret; receivers
recompute it and compare in constant time. Unless ``--webhook-secret`` is given, the key is
``webhook_key(token secret)``, a one-way derivation: a receiver holding it cannot sign tokens.
``emit`` only enqueues, so neither a request nor the media path ever waits for a receiver.
Each URL has its own queue and worker: deliveries to one URL keep their order, and a slow URL
does not delay another. A failed delivery (network error, timeout or non-2xx) is retried with
exponential backoff. A URL's queue is bounded in count and in bytes (a dead receiver must not
grow the process): past either bound the oldest queued events for that URL are dropped and
counted, so what is delivered when the receiver comes back is the most recent.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from common.tasks import stop_tasks

logger = logging.getLogger("shopcast.signaling.webhooks")

SIGNATURE_HEADER = "X-ShopCast-Signature"
EVENT_HEADER = "X-ShopCast-Event"
DELIVERY_HEADER = "X-ShopCast-Delivery"
# Domain separation of the derived webhook key: HMAC-SHA256(token secret, this), as hex.
WEBHOOK_KEY_LABEL = b"shopcast-webhooks"


def webhook_key(token_secret: str) -> str:
    """The default webhook key: lowercase hex of HMAC-SHA256(token secret, "shopcast-webhooks").
    One-way, so whoever verifies webhooks with it still cannot mint tokens."""
    return hmac.new(token_secret.encode(), WEBHOOK_KEY_LABEL, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


@dataclass
class WebhookSettings:
    urls: list[str] = field(default_factory=list)
    secret: str = ""
    attempts: int = 5  # deliveries tried per event, the first included
    backoff_s: float = 0.5  # wait before the first retry; doubles each time
    timeout_s: float = 5.0
    queue_size: int = 10_000  # bodies queued per URL
    queue_bytes: int = 8 * 1024 * 1024  # bytes of bodies queued per URL


@dataclass
class WebhookStats:
    delivered: int = 0
    failed: int = 0  # gave up after every attempt
    retried: int = 0
    dropped: int = 0  # queue full (count or bytes): the oldest queued are dropped
    dropped_bytes: int = 0


class Webhooks:
    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self.stats = WebhookStats()
        self._queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
        self._queued_bytes: dict[str, int] = {}  # per URL: bodies waiting in its queue
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if not self.settings.urls:
            return
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        for url in self.settings.urls:
            queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(self.settings.queue_size)
            self._queues[url] = queue
            self._queued_bytes[url] = 0
            self._workers.append(asyncio.create_task(self._work(url, queue)))

    async def close(self) -> None:
        await stop_tasks(self._workers)
        self._workers.clear()
        if self._session is not None:
            await self._session.close()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.urls)

    def emit(self, event: str, **payload: Mapping[str, Any]) -> None:
        """Queue ``event`` for every URL; returns at once."""
        if not self._queues:
            return
        delivery = "WH_" + uuid.uuid4().hex[:16]
        body = {"id": delivery, "event": event, "created_at": time.time(), **payload}
        raw = json.dumps(body, separators=(",", ":")).encode()
        for url, queue in self._queues.items():
            if len(raw) > self.settings.queue_bytes:  # could never fit: dropped alone
                self._count_drop(url, event, len(raw))
                continue
            self._make_room(url, queue, len(raw))
            queue.put_nowait((event, raw))
            self._queued_bytes[url] += len(raw)

    def queued_bytes(self, url: str) -> int:
        """Bytes of bodies waiting for ``url`` (not counting the one being delivered)."""
        return self._queued_bytes.get(url, 0)

    def _make_room(self, url: str, queue: asyncio.Queue[tuple[str, bytes]], size: int) -> None:
        """Drop the oldest queued events until one more body of ``size`` fits both bounds."""
        while not queue.empty() and (
            queue.full() or self._queued_bytes[url] + size > self.settings.queue_bytes
        ):
            event, body = queue.get_nowait()
            queue.task_done()
            self._queued_bytes[url] -= len(body)
            self._count_drop(url, event, len(body))

    def _count_drop(self, url: str, event: str, size: int) -> None:
        self.stats.dropped += 1
        self.stats.dropped_bytes += size
        if self.stats.dropped in (1, 10, 100) or self.stats.dropped % 1000 == 0:
            logger.warning("webhook queue full for %s: dropped %s (%d dropped so far)",
                           url, event, self.stats.dropped)

    async def drain(self) -> None:
        """Wait until everything queued so far was delivered or given up (tests, shutdown)."""
        await asyncio.gather(*(queue.join() for queue in self._queues.values()))

    async def _work(self, url: str, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        while True:
            event, body = await queue.get()
            self._queued_bytes[url] -= len(body)
            try:
                await self._deliver(url, event, body)
            finally:
                queue.task_done()

    async def _deliver(self, url: str, event: str, body: bytes) -> None:
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.settings.secret, body),
            EVENT_HEADER: event,
            DELIVERY_HEADER: json.loads(body)["id"],
        }
        delay = self.settings.backoff_s
        for attempt in range(1, self.settings.attempts + 1):
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if 200 <= response.status < 300:
                        self.stats.delivered += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            if attempt == self.settings.attempts:
                break
            self.stats.retried += 1
            logger.info("webhook %s to %s failed (%s); retry in %.1fs", event, url, problem, delay)
            await asyncio.sleep(delay)
            delay *= 2
        self.stats.failed += 1
        logger.warning("webhook %s to %s failed %d times (%s)", event, url, attempt, problem)
