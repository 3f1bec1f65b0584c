"""The room's media clock, published so commerce events can say where in the picture they happened.

A viewer sees the anchor 0.1-1.5 s late, so a product card must wait for the frame in which
the anchor pinned it. The frame is named by media time: the FLV timestamp of the room's output
and the RTP timestamp (90 kHz) of the anchor's video as WebRTC viewers get it. Those clocks live
here, in the process that holds the publisher; commerce events are published by whichever
signaling process took the request. So this node publishes a small clock anchor per room
(wall time <-> FLV ms <-> RTP timestamp) to the store, and the signaling side stamps each
commerce event by extrapolating from it (``signaling/live/media_time.py``).

Nothing here runs per packet: the producer keeps its newest timestamp and the FLV output's
timeline maps it to the room's FLV time (``sfu/flv/timeline.py``), so a sample reads what the
forwarding path keeps anyway. It is taken at arrival: the frame that reaches the node at wall
time T is about the one the anchor was showing when a request sent then reaches the node, which
is what "the frame in which the anchor pinned it" means. Every ``TICK_S`` each live room is
sampled; its anchor is published on go-live, every ``REFRESH_S`` (the store entry outlives a
few of them) and as soon as the sample drifts ``MAX_DRIFT_MS`` from what the last published
one predicts (an anchor whose frames come slower or faster than the wall clock, a new
publisher, a source switch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from common.tasks import stop_task
from sfu.flv.manager import FlvManager
from sfu.flv.output import RoomFlvOutput
from signaling.live.media_time import VIDEO_RATE, ClockAnchor
from signaling.store.outage import every

TICK_S = 0.25  # the FLV timeline re-anchors on each sender report: follow it soon
REFRESH_S = 5.0
MAX_DRIFT_MS = 40  # more than a frame at 30 fps: a sample is off by up to one


ClockSink = Callable[[str, ClockAnchor], Awaitable[None]]


def sample(output: RoomFlvOutput, now: float) -> ClockAnchor | None:
    """The room's media clock at ``now`` (unix seconds): the newest video frame on the wire (its
    packet arrived within a frame time) with the FLV time the output gives it. None while there
    is none: no video mapped yet, or an anchor whose tags carry their own times (RTMP)."""
    clock, video = output.video_clock, output.video
    if clock is None or video is None or not video.packets or output.timeline.epoch is None:
        return None
    if not output.live:
        return None
    rtp = video.last_timestamp
    return ClockAnchor(round(now * 1000), clock.ms(rtp), rtp)


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
        self._packets: dict[str, int] = {}  # video packets at the last round, by room
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # a Redis outage skips rounds quietly (logged once); the next round publishes
        self._task = asyncio.create_task(
            every(TICK_S, lambda: self.tick(time.time()), "media clock round"))

    async def close(self) -> None:
        await stop_task(self._task)

    async def tick(self, now: float) -> int:
        """Sample every live room; publish the anchors that are due. Returns how many."""
        due: list[tuple[str, ClockAnchor]] = []
        for room, output in self.flv.outputs.items():
            packets = output.video.packets if output.video is not None else 0
            if self._packets.get(room) == packets:
                continue  # nothing arrived since the last round: the publisher is silent
            self._packets[room] = packets
            fresh = sample(output, now)
            if fresh is None:
                continue
            last = self.published.get(room)
            if (last is None or fresh.wall_ms - last.wall_ms >= REFRESH_S * 1000
                    or drifted(last, fresh)):
                due.append((room, fresh))
        for room in [r for r in self._packets if r not in self.flv.outputs]:
            self._packets.pop(room)
            self.published.pop(room, None)
        for room, anchor in due:
            await self.sink(room, anchor)
            self.published[room] = anchor
            self.sent += 1
        return len(due)
