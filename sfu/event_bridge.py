"""Room events between the control plane's bus and participants' ``events`` data channels.

One bus subscription per room per process, however many participants: each event is sent to
every local channel of the room and crosses to each worker process with channels in the room
once. What a client sends goes to the control plane's handler, in order per participant; its
replies (errors, acks) go back to that participant only. Each channel has its own bucket of
``resume`` messages (``signaling/live/resume.py``), so one flooding channel is refused alone.
At its token's ``exp`` a channel gets ``error token_expired`` and is closed (``expire_at``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiortc import RTCDataChannel

from common.tasks import stop_tasks
from sfu.background import spawn
from sfu.events_channel import EventsChannel
from signaling.bus import Bus
from signaling.claims import Claims
from signaling.errors import StoreUnavailable
from signaling.live.resume import ResumeBudget
from signaling.live.schema import packed_error

logger = logging.getLogger("shopcast.sfu.events")

Send = Callable[[bytes], None]
MAX_PENDING = 256  # one participant's messages waiting for the handler; past it refused
BUSY = packed_error("too_many_pending",
                    f"at most {MAX_PENDING} of your messages wait to be handled; try again")
EXPIRED = packed_error("token_expired", "your token expired: join again with a new one")
MAX_HELD = 1000  # events held for one joiner while its join state is built


class ClientEventHandler(Protocol):
    """The control plane's side: validates and acts on client events, builds join state."""

    async def handle(self, room: str, claims: Claims, raw: bytes,
                     budget: ResumeBudget | None = None) -> list[bytes]: ...

    async def snapshot(self, room: str) -> bytes: ...

    def resume_budget(self) -> ResumeBudget: ...


class EventGate:
    """Live room events for one participant wait here until its join state has gone out, so
    state always comes first. The one place for that rule, in this process and in workers."""

    __slots__ = ("_held", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: list[bytes] | None = []

    def deliver(self, packed: bytes) -> None:
        if self._held is None:
            self._send(packed)
        elif len(self._held) < MAX_HELD:
            self._held.append(packed)

    def release(self) -> None:
        """Send what was held, then pass live events straight through."""
        held, self._held = self._held or [], None
        for packed in held:
            self._send(packed)


class Endpoint:
    """One participant's channel: where its replies go, and its messages handled in order."""

    def __init__(
        self, room: str, claims: Claims, send: Send, on_ready: Callable[[], None] | None = None
    ) -> None:
        self.room = room
        self.claims = claims
        self.send = send
        self._on_ready = on_ready
        self._last: asyncio.Task[None] | None = None
        self._pending = 0  # messages chained and not done: bounded by MAX_PENDING
        self.refused = 0
        self._gate = EventGate(send)
        # this channel's bucket of ``resume`` messages: the handler's, made at the first message
        self.resume_budget: ResumeBudget | None = None
        self.expired = False  # its token's ``exp`` passed: its messages are refused
        self._expiry: asyncio.TimerHandle | None = None

    def expire_at(self, close: Callable[[], None] | None) -> None:
        """At the token's ``exp`` (one timer, not a poll): ``error token_expired``, then
        ``close`` the channel (in a worker, where the pool cannot close it, every later message
        is refused instead)."""
        if self.claims.expires_at <= 0:
            return
        delay = max(0.0, self.claims.expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire, close)

    def disarm(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expire(self, close: Callable[[], None] | None) -> None:
        self._expiry = None
        self.expired = True
        self.send(EXPIRED)
        if close is not None:
            close()

    def deliver(self, packed: bytes) -> None:
        """A live room event: held until the join state went out."""
        self._gate.deliver(packed)

    def release(self) -> None:
        """The join state went out: live events flow (in a worker, once told ``on_ready``)."""
        self._gate.release()
        if self._on_ready is not None:
            self._on_ready()

    @property
    def pending(self) -> int:
        return self._pending

    def chain(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Run ``work`` after this participant's previous message is done; False (and nothing
        queued) when ``MAX_PENDING`` already wait, so a client that sends faster than the
        handler answers (or a stalled store) cannot grow the process without bound."""
        if self._pending >= MAX_PENDING:
            return False
        self._pending += 1
        previous = self._last

        async def run() -> None:
            try:
                if previous is not None:
                    with contextlib.suppress(Exception):
                        await previous
                await work()
            finally:
                self._pending -= 1

        self._last = spawn(run())
        return True


@dataclass
class RoomFeed:
    """The subscription of one room and everyone in this process (or its workers) it feeds."""

    local: dict[str, Endpoint] = field(default_factory=dict)
    workers: dict[int, Send] = field(default_factory=dict)  # worker index -> forward(packed)
    remote_counts: dict[int, int] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    @property
    def empty(self) -> bool:
        return not self.local and not self.remote_counts


def open_channel(
    channel: RTCDataChannel,
    room: str,
    claims: Claims,
    opened: Callable[[Endpoint], None],
    received: Callable[[Endpoint, bytes], None],
    closed: Callable[[], None],
) -> Endpoint:
    """Wrap a participant's ``events`` channel and wire its lifetime to the callbacks."""
    endpoint: Endpoint
    events = EventsChannel(channel, lambda raw: received(endpoint, raw))
    endpoint = Endpoint(room, claims, events.send)
    channel.on("close", closed)
    opened(endpoint)
    endpoint.expire_at(channel.close)
    return endpoint


class EventBridge:
    """Feeds rooms' bus events to channels and client events to the handler."""

    def __init__(self, bus: Bus, handler: ClientEventHandler) -> None:
        self.bus = bus
        self.handler = handler
        self.rooms: dict[str, RoomFeed] = {}
        self.handled = 0
        self.refused = 0  # client messages refused past MAX_PENDING (for /metrics)

    def open_local(self, leg_id: str, endpoint: Endpoint) -> None:
        """A channel in this process opened: join state first, then live events."""
        feed = self._feed(endpoint.room)
        feed.local[leg_id] = endpoint
        endpoint.chain(lambda: self._send_snapshot(endpoint))

    def close_local(self, leg_id: str, room: str) -> None:
        feed = self.rooms.get(room)
        if feed is not None:
            endpoint = feed.local.pop(leg_id, None)
            if endpoint is not None:
                endpoint.disarm()
            self._release(room, feed)

    def open_remote(self, worker: int, forward: Send, endpoint: Endpoint) -> None:
        """A channel in a worker opened: the worker gets the room's events once."""
        feed = self._feed(endpoint.room)
        feed.workers[worker] = forward
        feed.remote_counts[worker] = feed.remote_counts.get(worker, 0) + 1
        endpoint.chain(lambda: self._send_snapshot(endpoint))
        endpoint.expire_at(None)

    def close_remote(self, worker: int, endpoint: Endpoint) -> None:
        """The worker's channel closed: its expiry timer goes too (armed in ``open_remote``,
        it held the endpoint, its claims and its last task until the token's ``exp``)."""
        endpoint.disarm()
        room = endpoint.room
        feed = self.rooms.get(room)
        if feed is None or worker not in feed.remote_counts:
            return
        feed.remote_counts[worker] -= 1
        if feed.remote_counts[worker] <= 0:
            del feed.remote_counts[worker]
            feed.workers.pop(worker, None)
        self._release(room, feed)

    def receive(self, endpoint: Endpoint, raw: bytes) -> None:
        """A client event: handled in arrival order for this participant, or refused with
        ``error too_many_pending`` (logged once per participant, counted) past the bound."""
        if endpoint.chain(lambda: self._handle(endpoint, raw)):
            return
        self.refused += 1
        endpoint.refused += 1
        if endpoint.refused == 1:
            logger.warning("events from %s in room %s refused: %d wait to be handled",
                           endpoint.claims.identity, endpoint.room, MAX_PENDING)
        endpoint.send(BUSY)

    async def close(self) -> None:
        await stop_tasks([f.task for f in self.rooms.values()])
        self.rooms.clear()

    async def _handle(self, endpoint: Endpoint, raw: bytes) -> None:
        self.handled += 1
        if endpoint.expired:
            endpoint.send(EXPIRED)
            return
        if endpoint.resume_budget is None:
            endpoint.resume_budget = self.handler.resume_budget()
        try:
            replies = await self.handler.handle(endpoint.room, endpoint.claims, raw,
                                                endpoint.resume_budget)
        except Exception:
            logger.exception("event handler failed room=%s", endpoint.room)
            return
        for reply in replies:
            endpoint.send(reply)

    async def _send_snapshot(self, endpoint: Endpoint) -> None:
        try:
            endpoint.send(await self.handler.snapshot(endpoint.room))
        except StoreUnavailable as exc:  # Redis away (logged once): this joiner is told
            endpoint.send(packed_error(exc.code, exc.message))
        except Exception:
            logger.exception("room state failed room=%s", endpoint.room)
        endpoint.release()

    def _feed(self, room: str) -> RoomFeed:
        feed = self.rooms.get(room)
        if feed is None:
            feed = self.rooms[room] = RoomFeed()
            feed.task = asyncio.create_task(self._pump(room, feed))
        return feed

    def _release(self, room: str, feed: RoomFeed) -> None:
        if feed.empty:
            self.rooms.pop(room, None)
            if feed.task is not None:
                feed.task.cancel()

    async def _pump(self, room: str, feed: RoomFeed) -> None:
        """Deliver the room's events in seq order for as long as anyone here listens."""
        try:
            async with self.bus.subscribe(room) as subscription:
                async for event in subscription:
                    packed = event.packed
                    for endpoint in list(feed.local.values()):
                        endpoint.deliver(packed)
                    for forward in list(feed.workers.values()):
                        forward(packed)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("event feed of room %s stopped", room)
