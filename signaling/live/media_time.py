"""Commerce events stamped with the anchor's media time, shown in step with the picture.

A viewer sees the anchor 0.1-1.5 s late (WebRTC's jitter buffer, FLV's player buffer), and an
event from the bus arrives long before that: a "sale started" card would show before the
anchor says it on screen. So each commerce event carries ``media``: where the room's media was
when it happened, as ``flv_ms`` (the FLV timestamp of the room's output) and ``rtp`` (the RTP
timestamp, 90 kHz, of the anchor's video as WebRTC viewers receive it). A page holds the event
until its own playback reaches that point (``web/js/media_sync.js``).

The media clocks live in the process that holds the publisher (``sfu/media_clock.py``); it
keeps a ``ClockAnchor`` per room in the store (``KEY`` in the room's scope, with a TTL, so a
room whose publisher went away stops being stamped). Whichever process publishes a commerce
event reads the anchor and extrapolates to now: one store read per commerce event, nothing per
packet. Both clocks are wall clocks, so processes on several machines need their clocks in
step (NTP keeps them within a few ms); an anchor older than ``MAX_AGE_MS`` is not used.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from signaling.bus import Event
from signaling.live.timeline import RoomPublisher
from signaling.store import Store

KEY = "media_clock"  # in the room's scope
TTL_MS = 30_000  # the node refreshes it every 5 s
MAX_AGE_MS = 30_000
VIDEO_RATE = 90_000  # H.264 and VP8 RTP clock
# What a viewer sees on screen: the pin, the sale and its stock, gifts. Chat stays immediate.
STAMPED = frozenset({"product_pinned", "sale", "stock", "sold_out", "gift"})


@dataclass(frozen=True)
class ClockAnchor:
    """One instant of a room's media: at ``wall_ms`` (unix ms) the room's FLV output was at
    ``flv_ms`` and the anchor's video RTP clock at ``rtp``; both advance with wall time."""

    wall_ms: int
    flv_ms: int
    rtp: int

    def at(self, wall_ms: int) -> dict[str, int]:
        """The ``media`` field at ``wall_ms``, extrapolated."""
        elapsed = wall_ms - self.wall_ms
        return {"flv_ms": max(0, self.flv_ms + elapsed),
                "rtp": (self.rtp + elapsed * (VIDEO_RATE // 1000)) & 0xFFFFFFFF}


async def save_clock(store: Store, room: str, anchor: ClockAnchor) -> None:
    record = [anchor.wall_ms, anchor.flv_ms, anchor.rtp]
    await store.put(room, KEY, msgpack.packb(record), ttl_ms=TTL_MS)


def clock_sink(store: Store) -> Callable[[str, ClockAnchor], Awaitable[None]]:
    """The media plane's ``ClockSink``: each room's anchor to the store."""
    async def sink(room: str, anchor: ClockAnchor) -> None:
        await save_clock(store, room, anchor)
    return sink


async def load_clock(store: Store, room: str) -> ClockAnchor | None:
    raw = await store.get(room, KEY)
    if raw is None:
        return None
    try:
        wall_ms, flv_ms, rtp = msgpack.unpackb(raw)
        return ClockAnchor(int(wall_ms), int(flv_ms), int(rtp))
    except (ValueError, TypeError, msgpack.UnpackException):
        return None  # written by another version: not stamped rather than wrongly stamped


class MediaTimes:
    """A ``RoomPublisher`` that stamps the commerce events it passes on with ``media``."""

    def __init__(self, store: Store, publisher: RoomPublisher,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.stamped = 0
        self.unstamped = 0  # no live clock for the room: pages show these at once

    async def media(self, room: str) -> dict[str, int] | None:
        """The room's media time now, or None when no fresh anchor is kept."""
        anchor = await load_clock(self.store, room)
        now_ms = round(self.clock() * 1000)
        if anchor is None or abs(now_ms - anchor.wall_ms) > MAX_AGE_MS:
            return None
        return anchor.at(now_ms)

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        if event.get("type") in STAMPED and "media" not in event:
            media = await self.media(room)
            if media is None:
                self.unstamped += 1
            else:
                self.stamped += 1
                event = {**event, "media": media}
        return await self.publisher.publish(room, event)
