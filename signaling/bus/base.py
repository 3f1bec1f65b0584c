"""The event bus: room events with a per-room ``seq``, bounded history, and control topics.

``publish`` gives each room event the next ``seq`` of its room, keeps it in a bounded history
and fans it out to every subscription of the room, in any process (Redis pub/sub) or in this
one (memory). A ``Subscription`` hands events out strictly in ``seq`` order: when it notices a
gap (it fell behind and its queue overflowed, or a message was lost) it refills from history,
so a slow consumer never slows the publisher or anyone else, and a reconnecting client that
gives its last ``seq`` gets exactly what it missed.

A room's ``seq`` counts within an ``epoch``: an id that changes only when the counter starts
again from nothing (Redis lost its data, a memory backend's process restarted). Every event
carries its epoch; a ``Subscription`` that sees a new one hands out one ``resync`` event (so
the client drops its last ``seq`` and asks for a fresh ``state``), then the new epoch's events
from its first, instead of dropping them as already seen.

Topics (``notify``/``listen``) are un-sequenced control messages between processes, e.g. "kick
this participant" sent to the node that owns the room.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any

import msgpack

from signaling.errors import StoreUnavailable

SUBSCRIPTION_QUEUE = 1024
HISTORY_RETRY_S = 0.5  # a refill from history that met a store outage is tried again after
# What a closed room leaves behind: its seq counter, so a room re-created under the same name
# goes on from there (a client holding the old seq would otherwise drop the new room's events as
# already seen), and its history for a short while, so a client that reconnects right after the
# close still reads the ``room_closed`` it missed. Both expire: a closed room costs nothing after.
CLOSED_SEQ_TTL_S = 7 * 24 * 3600
CLOSED_HISTORY_TTL_S = 600


@dataclass(frozen=True)
class Event:
    """One room event: its ``data`` map carries ``type`` and ``seq``; ``packed`` is the msgpack
    form, computed once per process however many clients it is sent to."""

    room: str
    seq: int
    data: Mapping[str, Any] = field(hash=False)
    epoch: str = ""  # the room's seq epoch ("" when unknown: topics, old writers)

    @property
    def type(self) -> str:
        return str(self.data.get("type", ""))

    @cached_property
    def packed(self) -> bytes:
        packed: bytes = msgpack.packb(dict(self.data), use_bin_type=True)
        return packed


def pack(data: Mapping[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(dict(data), use_bin_type=True)
    return packed


def unpack(raw: bytes) -> dict[str, Any]:
    data = msgpack.unpackb(raw, raw=False)
    if not isinstance(data, dict):
        raise ValueError("an event is a msgpack map")
    return data


def check_event(event: Mapping[str, Any]) -> None:
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise ValueError("an event needs a non-empty string 'type'")


class Subscription:
    """Events of one room (or messages of one topic), in order; use as ``async with``."""

    def __init__(self, bus: Bus, channel: str, *, after_seq: int | None, sequenced: bool,
                 epoch: str = "") -> None:
        self.bus = bus
        self.channel = channel
        self.sequenced = sequenced
        self.dropped = 0  # events that did not fit the queue (refilled from history later)
        self.resyncs = 0  # new epochs seen
        self._after = after_seq
        self._last = after_seq
        self._epoch = epoch  # of ``_last``; "" adopts the first event's
        self._queue: asyncio.Queue[Event] = asyncio.Queue(SUBSCRIPTION_QUEUE)
        self._backlog: collections.deque[Event] = collections.deque()

    async def __aenter__(self) -> Subscription:
        await self.bus._attach(self)
        if self.sequenced and self._after is not None:
            self._backlog.extend(await self.bus.history(self.channel, self._after))
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.bus._detach(self)

    def deliver(self, event: Event) -> None:
        """Called by the bus; never blocks: a full queue drops, and history refills later."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> Event:
        """The next event with ``seq`` one above the last (or the next available, if history
        no longer reaches back that far)."""
        while True:
            from_backlog = bool(self._backlog)
            event = self._backlog.popleft() if from_backlog else await self._queue.get()
            if not self.sequenced:
                return event
            if event.epoch != self._epoch and event.epoch:
                if self._epoch:
                    return await self._resync(event)
                self._epoch = event.epoch
            if self._last is not None:
                if event.seq <= self._last:
                    continue  # already handed out (history and live overlap)
                if event.seq > self._last + 1 and not from_backlog:
                    missed = await self._kept(self._last)
                    self._backlog.extend([*missed, event])
                    continue
            self._last = event.seq
            return event

    async def _kept(self, after_seq: int) -> list[Event]:
        """History after ``after_seq``. Through a store outage it waits (nothing is published
        meanwhile) instead of ending the subscription, and with it every client behind it."""
        while True:
            try:
                return await self.bus.history(self.channel, after_seq)
            except StoreUnavailable:
                await asyncio.sleep(HISTORY_RETRY_S)

    async def _resync(self, event: Event) -> Event:
        """``event`` is of a new epoch: the seq started again. Hand out ``resync``, then the
        new epoch's events from its first (history holds those this one may have missed)."""
        self.resyncs += 1
        self._epoch = event.epoch
        self._last = 0
        kept = [e for e in await self._kept(0) if e.epoch == event.epoch]
        self._backlog = collections.deque([*kept, event])
        return resync_event(self.channel, event.epoch)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        return await self.get()

    @property
    def last_seq(self) -> int | None:
        return self._last

    @property
    def epoch(self) -> str:
        return self._epoch


def resync_event(room: str, epoch: str) -> Event:
    """What a subscriber hands its client when the room's seq started again (schema:
    ``resync``): no ``seq`` of its own; the events that follow are the new epoch's."""
    return Event(room, 0, {"type": "resync", "epoch": epoch}, epoch)


class Bus(abc.ABC):
    """Publish/subscribe of room events; both backends keep the same semantics."""

    def __init__(self, history_size: int = 1000) -> None:
        self.history_size = history_size
        self.published = 0
        self._subs: dict[str, set[Subscription]] = {}

    def subscribe(self, room: str, *, after_seq: int | None = None,
                  epoch: str = "") -> Subscription:
        """Events of ``room`` from now on; with ``after_seq``, first those after it. ``epoch``
        is the one ``after_seq`` belongs to (from ``position``): events of another one start
        with ``resync``."""
        return Subscription(self, room, after_seq=after_seq, sequenced=True, epoch=epoch)

    def listen(self, topic: str) -> Subscription:
        """Messages ``notify``'d on ``topic`` from now on (no seq, no history)."""
        return Subscription(self, "\0" + topic, after_seq=None, sequenced=False)

    def _fan_out(self, channel: str, event: Event) -> None:
        for sub in list(self._subs.get(channel, ())):
            sub.deliver(event)

    async def _attach(self, sub: Subscription) -> None:
        subs = self._subs.setdefault(sub.channel, set())
        subs.add(sub)
        if len(subs) == 1:
            await self._channel_opened(sub.channel)

    async def _detach(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.channel]
            await self._channel_closed(sub.channel)

    @abc.abstractmethod
    async def _channel_opened(self, channel: str) -> None:
        """The first local subscription of a channel (Redis subscribes here)."""

    @abc.abstractmethod
    async def _channel_closed(self, channel: str) -> None:
        """The last local subscription of a channel went away."""

    @property
    def subscriptions(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @abc.abstractmethod
    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        """Stamp ``event`` (a map with a ``type``) with the room's next ``seq`` and send it."""

    @abc.abstractmethod
    async def history(self, room: str, after_seq: int = 0, limit: int = 0) -> list[Event]:
        """Kept events with ``seq > after_seq``, oldest first (at most ``limit`` if set)."""

    @abc.abstractmethod
    async def last_seq(self, room: str) -> int: ...

    @abc.abstractmethod
    async def position(self, room: str) -> tuple[str, int]:
        """The room's epoch (made now if it has none yet) and last ``seq``, together."""

    @abc.abstractmethod
    async def forget_room(self, room: str) -> None:
        """The room closed: keep its ``seq`` for CLOSED_SEQ_TTL_S and its history for
        CLOSED_HISTORY_TTL_S, then nothing. A publish to the room (re-created) goes on from
        the kept ``seq``."""

    @abc.abstractmethod
    async def notify(self, topic: str, message: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
