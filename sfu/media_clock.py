"""The room's media clock, published so commerce events can say where in the picture they happened.

A viewer sees the anchor 0.1-1.5 s late, so a product card must wait for the frame in which
the anchor pinned it. The frame is named by media time: the FLV timestamp of the room's output
and the RTP timestamp (90 kHz) of the anchor's video as WebRTC viewers get it. Those clocks live
here, in the process that holds the publisher; commerce events are published by whichever
signaling process took the request. So this node publishes a small clock anchor per room
(wall time <-> FLV ms <-> RTP timestamp) to the store, and the signaling side stamps each
commerce event by extrapolating from it (``signaling/live/media_time.py``).

Nothing here runs per packet: the FLV output's timeline already maps each track's RTP clock
to the room's clock (``sfu/flv/timeline.py``, fed by the publisher's sender reports), so a
sample is two subtractions on what it keeps. Every ``TICK_S`` each live room is sampled; its
anchor is published on go-live, every ``REFRESH_S`` (the store entry outlives a few of them)
and as soon as the sample drifts ``MAX_DRIFT_MS`` from what the last published one predicts
(a new publisher clock, a source switch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from common.tasks import stop_task
from sfu.flv.manager import FlvManager
from sfu.flv.output import RoomFlvOutput
from sfu.producer import NTP_EPOCH_OFFSET
from signaling.live.media_time import VIDEO_RATE, ClockAnchor

logger = logging.getLogger("shopcast.sfu.media_clock")

TICK_S = 1.0
REFRESH_S = 5.0
MAX_DRIFT_MS = 20


ClockSink = Callable[[str, ClockAnchor], Awaitable[None]]


def sample(output: RoomFlvOutput, now: float) -> ClockAnchor | None:
    """The room's media clock at ``now`` (unix seconds), or None while it has none: no video
    mapped yet, or an anchor whose tags carry their own times (RTMP)."""
    clock = output.video_clock
    epoch = output.timeline.epoch
    if clock is None or epoch is None or not output.live:
        return None
    seconds = now + NTP_EPOCH_OFFSET  # the room's clock counts NTP seconds, as SRs do
    rtp = clock.rtp_at(seconds)
    if rtp is None:
        return None
    return ClockAnchor(round(now * 1000), round((seconds - epoch) * 1000), rtp)


def drifted(published: ClockAnchor, fresh: ClockAnchor) -> bool:
    """True when ``fresh`` is not where ``published`` says the clock would be by now."""
    expected = published.at(fresh.wall_ms)
    flv_ms, rtp = expected["flv_ms"], expected["rtp"]
    rtp_drift = ((fresh.rtp - rtp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
    return (abs(fresh.flv_ms - flv_ms) > MAX_DRIFT_MS
            or abs(rtp_drift) > MAX_DRIFT_MS * VIDEO_RATE // 1000)


class RoomMediaClocks:
    """Publishes each live room's clock anchor through ``sink`` (the store, in practice)."""

    def __init__(self, flv: FlvManager, sink: ClockSink) -> None:
        self.flv = flv
        self.sink = sink
        self.published: dict[str, ClockAnchor] = {}
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(time.time())
            except Exception:  # one bad round (the store away) must not end the clocks
                logger.exception("media clock round failed")
            await asyncio.sleep(TICK_S)

    async def tick(self, now: float) -> int:
        """Sample every live room; publish the anchors that are due. Returns how many."""
        due: list[tuple[str, ClockAnchor]] = []
        for room, output in self.flv.outputs.items():
            fresh = sample(output, now)
            if fresh is None:
                continue
            last = self.published.get(room)
            if (last is None or fresh.wall_ms - last.wall_ms >= REFRESH_S * 1000
                    or drifted(last, fresh)):
                due.append((room, fresh))
        for room in [r for r in self.published if r not in self.flv.outputs]:
            del self.published[room]
        for room, anchor in due:
            await self.sink(room, anchor)
            self.published[room] = anchor
            self.sent += 1
        return len(due)
