"""Which rooms of this node are recorded, and the recorders' one tick.

A ``RoomObserver`` placed after the ``FlvManager``: when a room's anchor goes live (its FLV
output is up) the room is recorded if its flag in the store says so, or, when it never said,
if ``--record`` is on. ``PUT /api/v1/rooms/{room}/recording`` writes the flag and announces it
on the bus topic ``recordings``; the node that has the room live starts or stops its recorder
at once, any node where the room goes live later reads the flag.

One task polls every recorder (``POLL_S``), which keeps the remux on the event loop, cheap and
in order (``RoomRecorder.busy_s``); the index gets each recording's meta when it starts, when
a segment opens, every ``INDEX_EVERY_S`` while it grows and when it ends (once its last bytes
are on disk), and the ``recording_finished`` webhook goes out then. Index writes and a
recording's last steps run on tasks of their own: a slow disk or an absent store never holds
the tick that every other recording needs. The retention sweep runs at start and hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import web

from common.tasks import stop_tasks
from sfu.flv.manager import FlvManager
from sfu.recording.recorder import RoomRecorder
from sfu.recording.retention import sweep
from sfu.room import Room
from sfu.session import PublisherSession
from sfu.settings import RecordSettings
from signaling.bus import Bus
from signaling.recordings_index import (
    TOPIC,
    RecordingMeta,
    RecordingsIndex,
    new_recording_id,
)

logger = logging.getLogger("shopcast.sfu.recording")

POLL_S = 0.1
INDEX_EVERY_S = 2.0
SWEEP_EVERY_S = 3600.0
CLOSE_WAIT_S = 10.0


class RecordingManager:
    """Room name -> its recorder on this node; one of ``SfuNode.room_observers``."""

    def __init__(self, flv: FlvManager, settings: RecordSettings, index: RecordingsIndex,
                 bus: Bus, node_id: str,
                 finished: Callable[[RecordingMeta], None] = lambda meta: None) -> None:
        self.flv = flv
        self.settings = settings
        self.index = index
        self.bus = bus
        self.node_id = node_id
        self.finished = finished
        self.recorders: dict[str, RoomRecorder] = {}
        self._indexed: dict[str, tuple[float, int]] = {}  # id -> (when, segments) last put
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._listening = asyncio.Event()
        self._lock = asyncio.Lock()  # starts and finishes one at a time
        self._past_busy = 0.0  # finished recorders' remux time and bytes: counters never drop
        self._past_bytes = 0
        self._ended: dict[str, int] = {}  # why recordings ended -> how many
        self._putting: dict[str, asyncio.Task[None]] = {}  # recording id -> its index write
        self._finalizing: set[asyncio.Task[None]] = set()  # finished recordings' last steps

    # --- RoomObserver -----------------------------------------------------------------------

    def publisher_live(self, room: Room, publisher: PublisherSession) -> None:
        if publisher.slot == 0:
            task = asyncio.get_running_loop().create_task(self._consider(room.name))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def publisher_left(self, room: Room, publisher: PublisherSession) -> None:
        pass  # the output closes with its anchor; the tick finishes its recording

    async def _consider(self, room: str) -> None:
        try:
            enabled = await self.index.enabled(room)
        except Exception:
            logger.exception("recording flag of room=%s unreadable; using --record", room)
            enabled = None
        if self.settings.enabled if enabled is None else enabled:
            await self.set_recording(room, True)

    # --- start and stop ---------------------------------------------------------------------

    async def set_recording(self, room: str, enabled: bool) -> None:
        """Start (if the room is live here) or stop the room's recording."""
        async with self._lock:
            current = self.recorders.get(room)
            if not enabled:
                if current is not None:
                    await self._finish(current)
                return
            output = self.flv.outputs.get(room)
            if output is None or output.closed:
                return
            if current is not None and current.output is output and not current.ended:
                return
            if current is not None:
                await self._finish(current)
            meta = RecordingMeta(new_recording_id(), room, self.node_id, time.time())
            recorder = RoomRecorder(meta, output, self.index.path_of(meta.id),
                                    self.settings.segment_s)
            self.recorders[room] = recorder
            recorder.start()

    async def _finish(self, recorder: RoomRecorder) -> None:
        """Stop ``recorder`` now; its last bytes, the index and the webhook follow on a task
        of their own (a slow disk or store must not hold the tick the other rooms need)."""
        meta = recorder.meta
        if self.recorders.get(meta.room) is recorder:
            del self.recorders[meta.room]
        self._indexed.pop(meta.id, None)
        final = recorder.finish()
        self._past_busy += recorder.busy_s
        self._past_bytes += meta.bytes
        self._ended[recorder.ended] = self._ended.get(recorder.ended, 0) + 1
        task = asyncio.get_running_loop().create_task(self._finalize(recorder, final))
        self._finalizing.add(task)
        task.add_done_callback(self._finalizing.discard)

    async def _finalize(self, recorder: RoomRecorder, final: RecordingMeta | None) -> None:
        recording_id = recorder.meta.id
        await recorder.written()
        in_flight = self._putting.get(recording_id)
        if in_flight is not None:  # an older meta must not land after the final one
            await asyncio.wait([in_flight])
        if final is None:  # no keyframe ever came: nothing to keep
            await asyncio.to_thread(self.index.delete_files, recording_id)
            return
        try:
            await self.index.put(final)
        except Exception:
            logger.exception("recording %s finished but the index could not be told",
                             recording_id)
        self.finished(final)

    # --- lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._tick()), asyncio.create_task(self._listen()),
                       asyncio.create_task(self._sweeps())]
        await self._listening.wait()

    async def close(self) -> None:
        await stop_tasks([*self._tasks, *self._pending])
        async with self._lock:
            for recorder in list(self.recorders.values()):
                await self._finish(recorder)
        if self._finalizing:  # the last fragments, the index and the webhooks, bounded
            await asyncio.wait(list(self._finalizing), timeout=CLOSE_WAIT_S)

    async def _listen(self) -> None:
        async with self.bus.listen(TOPIC) as messages:
            self._listening.set()
            async for message in messages:
                data = dict(message.data)
                try:
                    await self.set_recording(str(data["room"]), bool(data["enabled"]))
                except Exception:
                    logger.exception("recording command %r failed", data)

    async def _tick(self) -> None:
        while True:
            for recorder in list(self.recorders.values()):
                try:
                    await self._poll(recorder)
                except Exception:
                    logger.exception("recording %s failed", recorder.meta.id)
                    recorder.ended = recorder.ended or "error"
                    with contextlib.suppress(Exception):
                        async with self._lock:
                            await self._finish(recorder)
            await asyncio.sleep(POLL_S)

    async def _poll(self, recorder: RoomRecorder) -> None:
        recorder.poll()
        meta = recorder.meta
        if recorder.ended:
            restart = recorder.ended == "restart"
            async with self._lock:
                if self.recorders.get(meta.room) is recorder:
                    await self._finish(recorder)
            if restart:
                await self.set_recording(meta.room, True)
            return
        if not recorder.started or not recorder.changed:
            return
        now = time.monotonic()
        when, segments = self._indexed.get(meta.id, (0.0, 0))
        if meta.id not in self._putting and (
                now - when >= INDEX_EVERY_S or segments != len(meta.segments)):
            recorder.changed = False
            self._indexed[meta.id] = (now, len(meta.segments))
            self._index_later(RecordingMeta.loads(meta.dumps()))

    def _index_later(self, meta: RecordingMeta) -> None:
        """Write ``meta`` (a copy) to the index off the tick: a slow or absent store must not
        keep the recorders from reading their rooms' tags."""
        async def put() -> None:
            try:
                await self.index.put(meta)
            except Exception as exc:  # the next change tries again
                logger.warning("recording %s: the index was not updated (%s)", meta.id, exc)

        task = asyncio.get_running_loop().create_task(put())
        self._putting[meta.id] = task
        task.add_done_callback(lambda _: self._putting.pop(meta.id, None))

    async def _sweeps(self) -> None:
        while True:
            try:
                active = {r.meta.id for r in self.recorders.values()}
                await sweep(self.index, self.settings.retention_days, active)
            except Exception:
                logger.exception("recording retention sweep failed")
            await asyncio.sleep(SWEEP_EVERY_S)

    def lines(self) -> list[str]:
        """For /metrics: recordings under way, what they wrote, the remux's time on the loop
        (its cost per room), and why recordings ended."""
        active = list(self.recorders.values())
        busy = self._past_busy + sum(r.busy_s for r in active)
        written = self._past_bytes + sum(r.meta.bytes for r in active)
        out = [
            "# HELP shopcast_recordings_active Rooms being recorded on this node.",
            "# TYPE shopcast_recordings_active gauge",
            f"shopcast_recordings_active {len(active)}",
            "# HELP shopcast_recording_bytes_total Bytes of MP4 written by this node's "
            "recordings.",
            "# TYPE shopcast_recording_bytes_total counter",
            f"shopcast_recording_bytes_total {written}",
            "# HELP shopcast_recording_remux_seconds_total Time the recordings' remux took on "
            "the event loop.",
            "# TYPE shopcast_recording_remux_seconds_total counter",
            f"shopcast_recording_remux_seconds_total {busy:.6f}",
            "# HELP shopcast_recordings_ended_total Recordings ended on this node, by why.",
            "# TYPE shopcast_recordings_ended_total counter",
        ]
        out += [f'shopcast_recordings_ended_total{{reason="{reason}"}} {count}'
                for reason, count in sorted(self._ended.items())]
        return out


RECORDING_KEY = web.AppKey("recording_manager", RecordingManager)
