"""Snapshots for compliance review: every interval, each live room's newest keyframe as a JPEG.

The source is the room's FLV output (``sfu/flv/``), which every live room has in the process
that holds its publisher, whatever the anchor sends: a WHIP anchor's H.264 (remuxed), a VP8
anchor's (transcoded once per room for FLV anyway), an RTMP encoder's own H.264, or the co-host
mix. Its tag log holds the sequence headers and the newest keyframe, so a snapshot is one
keyframe decoded and one JPEG encoded, once per room and never per viewer, on one thread shared
by the node's rooms (libavcodec releases the GIL): the event loop only copies references.
A keyframe already turned into a JPEG is not decoded again (a GOP longer than the interval
gives the same picture a new time). The last ``keep`` of each live room stay in memory (a room
whose output is gone here takes its own along); each one goes to the ``SnapshotSink`` (the
control plane: the store for ``GET .../snapshot`` on any front door, and the signed
``snapshot`` webhook).
"""

from __future__ import annotations

import asyncio
import fractions
import io
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
from aiohttp import web

from common.tasks import stop_task
from sfu.flv.manager import FlvManager
from sfu.settings import SnapshotSettings

logger = logging.getLogger("shopcast.sfu.snapshots")

MAX_ROOMS = 10_000  # live rooms whose last snapshots are kept; the least recently taken go first


@dataclass(frozen=True)
class Snapshot:
    room: str
    taken_at: float  # unix seconds
    jpeg: bytes
    width: int
    height: int


SnapshotSink = Callable[[Snapshot], Awaitable[None]]


class SnapshotError(Exception):
    """The keyframe did not decode (a broken or unsupported stream): no snapshot this time."""


def keyframe_jpeg(flv: bytes, quality: int) -> tuple[bytes, int, int]:
    """The first picture of a short FLV stream (header, sequence headers, one keyframe tag) as
    a JPEG of ``quality`` (2 best .. 31 worst, ffmpeg's qscale); runs on the snapshot thread."""
    try:
        with av.open(io.BytesIO(flv), "r", format="flv") as container:
            if not container.streams.video:
                raise SnapshotError("no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # one picture: no codec threads to start
            frame = next(container.decode(stream), None)
    except (av.FFmpegError, StopIteration) as exc:
        raise SnapshotError(f"the keyframe did not decode: {exc}") from exc
    if frame is None:
        raise SnapshotError("the keyframe gave no picture")
    try:
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = frame.width, frame.height
        encoder.pix_fmt = "yuvj420p"
        encoder.thread_count = 1
        encoder.time_base = fractions.Fraction(1, 1)
        encoder.options = {"qmin": str(quality), "qmax": str(quality)}
        picture = frame.reformat(format="yuvj420p")
        picture.pts = 0
        jpeg = b"".join(bytes(p) for p in [*encoder.encode(picture), *encoder.encode(None)])
    except (av.FFmpegError, ValueError) as exc:  # counted as failed, as a bad keyframe is
        raise SnapshotError(f"the picture did not encode: {exc}") from exc
    return jpeg, frame.width, frame.height


class RoomSnapshots:
    """Takes every live room's snapshot each ``settings.interval_s`` (0: never)."""

    def __init__(self, flv: FlvManager, settings: SnapshotSettings,
                 sink: SnapshotSink | None = None) -> None:
        self.flv = flv
        self.settings = settings
        self.sink = sink
        self.rooms: OrderedDict[str, deque[Snapshot]] = OrderedDict()
        self.taken = 0
        self.failed = 0
        self.codec_s = 0.0  # thread time spent decoding and encoding, for /metrics and figures
        self._sources: dict[str, bytes] = {}  # room -> the keyframe tag its last JPEG shows
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    def latest(self, room: str) -> Snapshot | None:
        kept = self.rooms.get(room)
        return kept[-1] if kept else None

    async def start(self) -> None:
        if self.settings.interval_s <= 0:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="snapshots")
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await stop_task(self._task)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        interval = self.settings.interval_s
        next_at = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))
            # a late round (a slow one before it, a stalled loop) is one round, not a burst of
            # the rounds missed, each a webhook per room
            next_at = max(next_at, time.monotonic()) + interval
            try:
                await self.take_all()
            except Exception:  # one bad round must not end the snapshots of every room
                logger.exception("snapshot round failed")

    async def take_all(self) -> list[Snapshot]:
        """One snapshot per live room with a keyframe, now."""
        taken = []
        for room in [name for name, output in self.flv.outputs.items() if output.live]:
            snapshot = await self.take(room)
            if snapshot is not None:
                taken.append(snapshot)
        for room in {*self.rooms, *self._sources} - self.flv.outputs.keys():
            self.rooms.pop(room, None)  # the room ended here: its latest is the store's now
            self._sources.pop(room, None)
        return taken

    async def take(self, room: str) -> Snapshot | None:
        output = self.flv.outputs.get(room)
        number = output.log.latest_keyframe() if output is not None else None
        if output is None or number is None:
            return None
        keyframe = b"".join(output.log.data(number, number + 1))
        previous = self.latest(room)
        now = time.time()
        if previous is not None and self._sources.get(room) == keyframe:
            snapshot = Snapshot(room, now, previous.jpeg, previous.width, previous.height)
        else:
            decoded = await self._decode(output.log.header + keyframe)
            if decoded is None:
                return None
            self._sources[room] = keyframe
            snapshot = Snapshot(room, now, *decoded)
        self._keep(snapshot)
        if self.sink is not None:
            try:
                await self.sink(snapshot)
            except Exception:  # the store away: the snapshot is still kept here
                logger.exception("room %s: handing the snapshot on failed", room)
        return snapshot

    async def _decode(self, flv: bytes) -> tuple[bytes, int, int] | None:
        loop = asyncio.get_running_loop()

        def job() -> tuple[tuple[bytes, int, int], float]:
            """On the snapshot thread, whose own CPU time is what the codec work cost."""
            started = time.thread_time()
            result = keyframe_jpeg(flv, self.settings.quality)
            return result, time.thread_time() - started

        try:
            result, spent = await loop.run_in_executor(self._executor, job)
        except SnapshotError as exc:
            self.failed += 1
            logger.warning("snapshot failed: %s", exc)
            return None
        self.codec_s += spent
        return result

    def lines(self) -> list[str]:
        """``/metrics``: snapshots taken and failed, and their codec time, on this node."""
        return [
            "# HELP shopcast_snapshots_total Compliance snapshots taken (JPEGs of a room's "
            "newest keyframe), by result.",
            "# TYPE shopcast_snapshots_total counter",
            f'shopcast_snapshots_total{{result="taken"}} {self.taken}',
            f'shopcast_snapshots_total{{result="failed"}} {self.failed}',
            "# HELP shopcast_snapshot_codec_seconds_total Thread time decoding keyframes and "
            "encoding JPEGs for snapshots.",
            "# TYPE shopcast_snapshot_codec_seconds_total counter",
            f"shopcast_snapshot_codec_seconds_total {self.codec_s:.6f}",
        ]

    def _keep(self, snapshot: Snapshot) -> None:
        kept = self.rooms.pop(snapshot.room, None) or deque(maxlen=self.settings.keep)
        kept.append(snapshot)
        self.rooms[snapshot.room] = kept
        self.taken += 1
        while len(self.rooms) > MAX_ROOMS:
            self.rooms.popitem(last=False)


SNAPSHOTS_KEY = web.AppKey("room_snapshots", RoomSnapshots)
