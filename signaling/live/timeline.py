"""The room's commerce timeline: pins, unpins, sales, stock and sold_out (chat and its
deletions when asked), each kept with the wall time it was published, so any node can put it
on a recording's clock.

Events are kept where they are published: the catalog, the sales (and the chat) publish through
a ``Timeline``, which publishes on the bus and then keeps the event. The kept events live in the
room's scope, so closing the room frees them with the rest of its data (each of its recordings
first gets its own part, kept with the recording: ``put_aside``) and both backends hold them
alike: rings of ``MAX_EVENTS`` slots (hashes numbered by a counter each), one for stock
updates, one for chat, one for the rest, so a long sale's stock updates (up to four a second)
never push the show's pins out. A ring that went round has lost its oldest events; a recording
that may have had some of them is answered with ``truncated``. Events are put in order by their
``seq``, whichever ring and process kept them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from signaling.bus import Bus, Event
from signaling.bus.base import pack, unpack
from signaling.recordings_index import SCOPE as RECORDINGS
from signaling.recordings_index import TIMELINES, recordings_of
from signaling.store import Store

COMMERCE_TYPES = frozenset({"product_pinned", "sale", "stock", "sold_out"})
CHAT_TYPES = frozenset({"chat", "chat_deleted"})  # a deleted message is never replayed
MAX_EVENTS = 4096  # kept per ring and room; the oldest go first
# Each ring is a hash, slot (n % MAX_EVENTS) -> {n, wall, event}, with its counter at ring + ":n".
RING, STOCK_RING, CHAT_RING = "timeline", "timeline:stock", "timeline:chat"
RINGS = (RING, STOCK_RING, CHAT_RING)
RING_OF = {"stock": STOCK_RING, "chat": CHAT_RING, "chat_deleted": CHAT_RING}  # else RING


class RoomPublisher(Protocol):
    """What the commerce services need of the bus: ``publish`` (the bus, or a ``Timeline``)."""

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event: ...


@dataclass(frozen=True)
class Kept:
    """One kept event: its number in its ring, its wall time, the event (with its ``seq``)."""

    n: int
    wall: float
    event: dict[str, Any]

    @property
    def order(self) -> tuple[int, float, int]:
        return int(self.event.get("seq", 0)), self.wall, self.n


class Timeline:
    """Publishes room events on the bus and keeps the commerce ones with their wall time."""

    def __init__(self, store: Store, bus: Bus, *, chat: bool = False,
                 max_events: int = MAX_EVENTS) -> None:
        self.store = store
        self.bus = bus
        self.max_events = max_events
        self.types = COMMERCE_TYPES | CHAT_TYPES if chat else COMMERCE_TYPES

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        published = await self.bus.publish(room, event)
        if published.type in self.types:
            await self.keep(room, published, time.time())
        return published

    async def keep(self, room: str, event: Event, wall: float) -> None:
        ring = RING_OF.get(event.type, RING)
        n = await self.store.incr(room, ring + ":n")
        record = pack({"n": n, "wall": wall, "event": {**event.data, "seq": event.seq}})
        await self.store.hset(room, ring, str(n % self.max_events), record)

    async def kept(self, room: str) -> tuple[list[Kept], list[float]]:
        """The room's kept events in order, and for each ring that lost its oldest events the
        wall time of the oldest it still has (what that ring held before it is gone)."""
        kept: list[Kept] = []
        lost_before: list[float] = []
        for ring in RINGS:
            raw = await self.store.hgetall(room, ring)
            items = sorted((_kept(value) for value in raw.values()), key=lambda k: k.n)
            if items and items[0].n > 1:
                lost_before.append(items[0].wall)
            kept.extend(items)
        return sorted(kept, key=lambda k: k.order), lost_before


    async def of_recording(
        self, recording: Mapping[str, Any], now: float
    ) -> tuple[list[dict[str, Any]], bool]:
        """The events of ``recording`` (the recordings API's object) on its clock, and whether
        some may be missing: its own once its room closed, else from the room's."""
        aside = await self.store.hget(RECORDINGS, TIMELINES, str(recording["id"]))
        if aside is not None:
            data = unpack(aside)
            return list(data["events"]), bool(data["truncated"])
        kept, lost_before = await self.kept(str(recording["room"]))
        return on_recording_clock(kept, *span(recording, now), lost_before=lost_before)

    async def put_aside(self, room: str) -> int:
        """The room closes and its kept events go with its data: first each of its recordings
        that has no timeline of its own gets one, kept with the recording (and deleted with
        it), so its replay shows its products after the room is gone. Returns how many."""
        recordings = await recordings_of(self.store, room)
        if not recordings:
            return 0
        kept, lost_before = await self.kept(room)
        now = time.time()
        done = 0
        for meta in recordings:
            if await self.store.hget(RECORDINGS, TIMELINES, meta.id) is not None:
                continue  # put aside when an earlier room of the name closed
            events, truncated = on_recording_clock(kept, *span(meta.public(), now),
                                                   lost_before=lost_before)
            await self.store.hset(RECORDINGS, TIMELINES, meta.id,
                                  pack({"events": events, "truncated": truncated}))
            done += 1
        return done


def span(recording: Mapping[str, Any], now: float) -> tuple[float, float]:
    """(started_at, duration_s) of the recordings API's object: one still being made reaches
    up to ``now``."""
    started_at = float(recording["started_at"])
    duration_s = float(recording["duration_s"])
    if not recording.get("finished", True):
        duration_s = max(duration_s, now - started_at)
    return started_at, duration_s


def _kept(raw: bytes) -> Kept:
    data = unpack(raw)
    return Kept(int(data["n"]), float(data["wall"]), dict(data["event"]))


def on_recording_clock(
    kept: Iterable[Kept], started_at: float, duration_s: float, *,
    lost_before: Iterable[float] = (),
) -> tuple[list[dict[str, Any]], bool]:
    """The events of a recording that started at wall time ``started_at`` and lasts
    ``duration_s``, each as ``{"t": seconds on the recording's clock, "type", ...fields}``,
    and whether some may be missing (``lost_before``: see ``Timeline.kept``). What was on
    screen when the recording started (the pin, the sale and its stock) comes first at
    ``t = 0`` with ``at_start``; an unpin is ``product_unpinned``; a chat message a moderator
    deleted is left out, whenever it was deleted."""
    kept = sorted(kept, key=lambda k: k.order)
    deleted = {k.event.get("id") for k in kept if k.event.get("type") == "chat_deleted"}
    before: dict[tuple[str, str], Kept] = {}
    inside: list[dict[str, Any]] = []
    end = started_at + duration_s
    for item in kept:
        if item.event.get("type") in CHAT_TYPES and (
                item.event.get("type") == "chat_deleted" or item.event.get("id") in deleted):
            continue
        if item.wall < started_at:
            _fold(before, item)
        elif item.wall <= end:
            inside.append(_entry(item, round(item.wall - started_at, 3)))
    at_start = [_entry(k, 0.0) | {"at_start": True}
                for k in sorted(before.values(), key=lambda k: k.order)]
    # a ring that went round lost events older than its oldest kept: inside, if that is
    truncated = any(wall > started_at for wall in lost_before)
    return at_start + inside, truncated


def _fold(state: dict[tuple[str, str], Kept], item: Kept) -> None:
    """Keep only what still holds at the end of ``state``: the last pin, the last sale, and
    the stock of that sale's product since it started."""
    kind = str(item.event.get("type", ""))
    sku = str(item.event.get("sku", ""))
    if kind == "product_pinned":
        state[("pin", "")] = item
    elif kind == "sale":
        state[("sale", "")] = item
        state.pop(("stock", sku), None)
    elif kind in ("stock", "sold_out"):
        state[("stock", sku)] = item


def _entry(item: Kept, t: float) -> dict[str, Any]:
    fields = {k: v for k, v in item.event.items() if k not in ("type", "t")}
    kind = str(item.event.get("type", ""))
    if kind == "product_pinned" and fields.get("product") is None:
        kind = "product_unpinned"
    return {"t": t, "type": kind, **fields}
