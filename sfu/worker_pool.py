"""The publisher's process side of the worker processes: spawn them, route viewers to them, and
feed each worker a room's canonical packets once, however many of its viewers watch.

Control messages are the declared ones of ``sfu/worker_protocol.py``, handled through the
table built in ``WorkerPool._dispatch``. A worker that dies is replaced (with backoff); the
viewers it held end through the normal session-closed path, so their pages re-join."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable

from common.tasks import stop_task
from sfu.errors import NoWorkers
from sfu.event_bridge import Endpoint, EventBridge
from sfu.ipc import ControlChannel, Dispatch, MediaSender, socketpair
from sfu.producer import Producer
from sfu.room_layout import RoomLayout
from sfu.settings import NodeSettings
from sfu.worker_protocol import (
    ClientEvent,
    CloseLeg,
    CloseLegReply,
    Codec,
    Direction,
    EventsClosed,
    EventsOpen,
    EventsReady,
    KeyframeRequest,
    Layout,
    LegClosed,
    LegConnected,
    Play,
    PlayReply,
    ProducerClosed,
    ProducerOpen,
    ProducersAdded,
    Ready,
    Reason,
    RoomEvent,
    SenderReport,
    Shutdown,
    Stats,
    ToLeg,
)
from signaling.claims import Claims

logger = logging.getLogger("shopcast.sfu.workers")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
RESPAWN_FIRST_S = 0.5
"""A dead worker is replaced after this long, doubling per death up to RESPAWN_MAX_S: a worker
that dies at start-up (bad build, no memory) does not spin the node's CPU."""
RESPAWN_MAX_S = 8.0
RESPAWN_RESET_S = 60.0
"""A worker that lived this long died of something passing: its replacement waits only
RESPAWN_FIRST_S again."""


class WorkerFeed:
    """A producer's sink for one worker: the packet crosses to that process once."""

    __slots__ = ("_send", "key")

    def __init__(self, key: int, sender: MediaSender) -> None:
        self.key = key
        self._send = sender.send

    def forward(self, packet: bytes, keyframe: bool) -> None:
        self._send(self.key, keyframe, packet)

    def close(self) -> None:
        """Nothing to free: the worker learns of closed producers over the control channel."""


class RemoteViewer:
    """The publisher's process's handle on a viewer that lives in a worker: a ``Session``
    (``sfu/session.py``) like the legs of this process."""

    role = "viewer"
    transport = "whep"

    def __init__(self, leg_id: str, room: str, identity: str, worker: WorkerHandle,
                 keys: list[int], claims: Claims | None = None) -> None:
        self.id = leg_id
        self.claims = claims
        self.room = room
        self.identity = identity
        self.worker = worker
        self.keys = keys
        self.closed = False
        self.connected_at: float | None = None  # told by the worker (LegConnected)

    @property
    def state(self) -> str:
        return "closed" if self.closed else "open"

    async def close(self) -> None:
        if self.closed:
            return
        try:
            await self.worker.control.request(CloseLeg(self.id), CloseLegReply)
        except ConnectionError:
            pass  # the worker died meanwhile: the pool ends this session on its own

    def on_producer_closed(self, producer: Producer) -> None:
        """The worker closes its own legs when told the producer is gone."""

    def on_producer_added(self, producer: Producer) -> None:
        """The pool tells the worker once for all its viewers of the room."""


class WorkerHandle:
    """One worker process and its channels, as seen from the publisher's process."""

    def __init__(self, index: int, process: asyncio.subprocess.Process,
                 control: ControlChannel, media: MediaSender) -> None:
        self.index = index
        self.process = process
        self.control = control
        self.media = media
        self.legs: dict[str, RemoteViewer] = {}
        self.feeds: dict[int, WorkerFeed] = {}
        self.counters: dict[str, dict[int, int]] = {}  # name -> producer key -> count
        self.bad_messages: dict[str, int] = {}  # reason -> messages the worker refused
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.alive = False  # ready and its channel open: viewers may be placed here
        self.started_at = time.monotonic()
        self.replacement = False  # started in place of a dead worker


class WorkerPool:
    """Spreads viewer legs over worker processes, least loaded first."""

    def __init__(
        self, settings: NodeSettings, on_leg_closed: Callable[[RemoteViewer], None],
        events: EventBridge | None = None,
    ) -> None:
        """``events`` serves the ``events`` data channels of the workers' viewers."""
        self.count = settings.workers
        self._settings = settings
        self._on_leg_closed = on_leg_closed
        self.workers: list[WorkerHandle] = []
        self._producers: dict[int, Producer] = {}
        self._stopping = False
        self.events = events
        self._endpoints: dict[str, Endpoint] = {}
        self._settings_json = json.dumps(dataclasses.asdict(settings))
        self._respawns: dict[int, asyncio.Task[None]] = {}  # index -> waiting to replace it
        self._backoff_s: dict[int, float] = {}  # index -> the wait before its next respawn
        self.respawned = 0  # workers replaced since start
        self._retired_counters: dict[str, dict[int, int]] = {}  # dead workers' last stats
        self._retired_bad: collections.Counter[str] = collections.Counter()

    async def start(self) -> None:
        for index in range(self.count):  # appended one by one: each may say ready at once
            self.workers.append(await self._spawn(index))
        async with asyncio.timeout(START_TIMEOUT_S):
            await asyncio.gather(*(w.ready for w in self.workers))
        logger.info("%d worker processes ready: pids %s", self.count,
                    [w.process.pid for w in self.workers])

    async def _spawn(self, index: int) -> WorkerHandle:
        """Start worker process ``index`` with its two channels; ``ready`` resolves once its
        loop runs."""
        control_here, control_there = socketpair()
        media_here, media_there = socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sfu.worker",
                "--control-fd", str(control_there.fileno()),
                "--media-fd", str(media_there.fileno()),
                "--settings", self._settings_json,
                pass_fds=(control_there.fileno(), media_there.fileno()),
            )
        except BaseException:
            control_here.close()
            media_here.close()
            raise
        finally:
            control_there.close()
            media_there.close()
        media_here.shutdown(0)  # the publisher's process only sends media
        control = ControlChannel(
            control_here, self._dispatch(index),
            functools.partial(self._channel_closed, index), peer=f"worker-{index}",
        )
        return WorkerHandle(index, process, control, MediaSender(media_here))

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._respawns.values()):
            await stop_task(task)
        for worker in self.workers:
            worker.control.send(Shutdown())
        for worker in self.workers:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            worker.control.close()

    @property
    def live(self) -> int:
        """Workers that can take viewers now (ready, channel open)."""
        return sum(1 for w in self.workers if w.alive)

    async def open_viewer(
        self, room: str, identity: str, offer_sdp: str, layout: RoomLayout,
        producers: list[Producer], claims: Claims | None = None,
    ) -> tuple[RemoteViewer, str]:
        """Create a viewer leg in the least loaded worker; raises the worker's MediaError."""
        alive = [w for w in self.workers if w.alive]
        if not alive:
            raise NoWorkers("no media worker is running")
        worker = min(alive, key=lambda w: len(w.legs))
        for producer in producers:
            self._announce(worker, producer)
        try:
            reply = await worker.control.request(
                Play(room, identity, offer_sdp, Layout.of(layout), [p.key for p in producers],
                     events=claims is not None),
                PlayReply,
            )
        except ConnectionError:
            raise NoWorkers("the media worker ended while answering; retry") from None
        if reply.error is not None:
            self._release_unused(worker, [p.key for p in producers])
            raise reply.error.exception()
        leg = RemoteViewer(
            reply.leg, room, identity, worker, [p.key for p in producers], claims
        )
        worker.legs[leg.id] = leg
        return leg, reply.sdp

    def producers_added(self, room: str, producers: list[Producer]) -> None:
        """A co-host went live: workers with viewers of the room start receiving it."""
        for worker in self.workers:
            if not any(leg.room == room for leg in worker.legs.values()):
                continue
            for producer in producers:
                self._announce(worker, producer)
            worker.control.send(ProducersAdded(room, [p.key for p in producers]))

    def producer_closed(self, producer: Producer) -> None:
        self._producers.pop(producer.key, None)
        for counts in self._retired_counters.values():  # kept only while the track lives
            counts.pop(producer.key, None)
        for worker in self.workers:
            if worker.feeds.pop(producer.key, None) is not None:
                worker.control.send(ProducerClosed(producer.key))

    def send_sender_reports(self) -> None:
        for worker in self.workers:
            for key in worker.feeds:
                producer = self._producers.get(key)
                if producer is not None:
                    ntp, rtp = producer.sender_report()
                    worker.control.send(SenderReport(key, ntp, rtp))

    def counter(self, name: str, key: int) -> int:
        """A per-track counter summed over the workers' mirrors (their once-a-second stats),
        dead workers' last figures included so that counters never go back."""
        retired = self._retired_counters.get(name, {}).get(key, 0)
        return retired + sum(w.counters.get(name, {}).get(key, 0) for w in self.workers)

    def bad_messages(self) -> dict[str, int]:
        """Control messages refused, by reason, on both ends of every worker's channel."""
        total: collections.Counter[str] = collections.Counter({r.value: 0 for r in Reason})
        total.update(self._retired_bad)
        for worker in self.workers:
            total.update(worker.control.bad)
            total.update(worker.bad_messages)
        return dict(total)

    def _announce(self, worker: WorkerHandle, producer: Producer) -> None:
        """Create the worker's mirror of ``producer`` and start feeding it, once per worker.

        One step, so concurrent viewers on one worker share a single mirror.
        """
        if producer.key in worker.feeds or producer.closed:
            return
        self._producers[producer.key] = producer
        worker.control.send(ProducerOpen(
            producer.key, producer.kind, Codec.of(producer.codec), producer.ssrc,
            producer.publisher_id, producer.slot_index, producer.identity,
        ))
        feed = WorkerFeed(producer.key, worker.media)
        worker.feeds[producer.key] = feed
        producer.attach(feed)

    def _dispatch(self, index: int) -> Dispatch:
        """What each message from worker ``index`` does: one handler per declared op."""
        dispatch = Dispatch(Direction.FROM_WORKER)
        dispatch.on(Ready, lambda _: self._ready(index))
        dispatch.on(KeyframeRequest, self._keyframe)
        dispatch.on(LegClosed, lambda m: self._leg_gone(self.workers[index], m.leg))
        dispatch.on(LegConnected, lambda m: self._leg_connected(self.workers[index], m.leg))
        dispatch.on(Stats, lambda m: self._stats(index, m))
        dispatch.on(EventsOpen, lambda m: self._events_open(self.workers[index], m.leg))
        dispatch.on(ClientEvent, self._client_event)
        dispatch.on(EventsClosed, lambda m: self._events_closed(self.workers[index], m.leg))
        return dispatch

    def _ready(self, index: int) -> None:
        worker = self.workers[index]
        if not worker.ready.done():
            worker.alive = not worker.control.closed
            worker.ready.set_result(None)
            if worker.replacement and worker.alive:  # counted as it becomes usable
                self.respawned += 1
                logger.warning("worker %d replaced: pid %s", index, worker.process.pid)

    def _keyframe(self, message: KeyframeRequest) -> None:
        producer = self._producers.get(message.key)
        if producer is not None:
            producer.request_keyframe()

    def _stats(self, index: int, message: Stats) -> None:
        worker = self.workers[index]
        worker.counters = {name: dict(counts) for name, counts in message.counters.items()}
        worker.bad_messages = dict(message.bad_messages)

    def _channel_closed(self, index: int) -> None:
        """Worker ``index`` is gone (killed, crashed, or shut down): its viewers' sessions
        end through the node's session-closed path, the producers stop feeding it, and a
        replacement is started after the backoff."""
        worker = self.workers[index]
        worker.alive = False
        if not worker.ready.done():
            worker.ready.set_exception(ConnectionError(f"worker {index} exited at start-up"))
            worker.ready.exception()  # retrieved: whoever waits sees it, nobody else logs it
        if not self._stopping:
            logger.error("worker %d (pid %s) is gone; ending its %d viewer sessions", index,
                         worker.process.pid, len(worker.legs))
        for leg_id in list(worker.legs):
            self._leg_gone(worker, leg_id)
        for key, feed in list(worker.feeds.items()):  # announced for a play that never ended
            producer = self._producers.get(key)
            if producer is not None:
                producer.detach(feed)
        worker.feeds.clear()
        if not self._stopping:
            self._retire(worker)
            self._schedule_respawn(index, time.monotonic() - worker.started_at)

    def _retire(self, worker: WorkerHandle) -> None:
        for name, counts in worker.counters.items():
            mine = self._retired_counters.setdefault(name, {})
            for key, n in counts.items():
                mine[key] = mine.get(key, 0) + n
        worker.counters = {}
        self._retired_bad.update(worker.control.bad)
        self._retired_bad.update(worker.bad_messages)
        worker.control.bad.clear()
        worker.bad_messages = {}

    def _schedule_respawn(self, index: int, lived_s: float) -> None:
        if index in self._respawns:
            return
        if lived_s >= RESPAWN_RESET_S:
            self._backoff_s[index] = RESPAWN_FIRST_S
        delay = self._backoff_s.get(index, RESPAWN_FIRST_S)
        self._backoff_s[index] = min(delay * 2, RESPAWN_MAX_S)
        self._respawns[index] = asyncio.get_running_loop().create_task(
            self._respawn(index, delay))

    async def _respawn(self, index: int, delay: float) -> None:
        """Replace worker ``index`` after ``delay``; a replacement that fails to start is
        retried with the next backoff (its channel's close schedules it)."""
        try:
            await asyncio.sleep(delay)
            old = self.workers[index]
            await old.process.wait()  # reaped: no zombie
            old.control.close()
            if self._stopping:
                return
            worker = await self._spawn(index)
            worker.replacement = True  # before any await: its ready is handled after this
            self.workers[index] = worker
        except Exception:
            logger.exception("worker %d could not be started again", index)
            self._respawns.pop(index, None)
            self._schedule_respawn(index, 0.0)
            return
        self._respawns.pop(index, None)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await worker.ready
        except (TimeoutError, ConnectionError):
            if not worker.control.closed:  # hung at start-up: kill it; its close retries
                worker.process.kill()

    def _events_open(self, worker: WorkerHandle, leg_id: str) -> None:
        """A worker's participant opened its ``events`` channel: join state, then room events."""
        bridge = self.events
        leg = worker.legs.get(leg_id)
        if bridge is None or leg is None or leg.claims is None:
            return
        control = worker.control
        endpoint = Endpoint(
            leg.room, leg.claims,
            lambda packed: control.send(ToLeg(leg_id, packed)),
            lambda: control.send(EventsReady(leg_id)),
        )
        self._endpoints[leg_id] = endpoint
        room = leg.room
        bridge.open_remote(
            worker.index, lambda packed: control.send(RoomEvent(room, packed)), endpoint
        )

    def _client_event(self, message: ClientEvent) -> None:
        endpoint = self._endpoints.get(message.leg)
        if endpoint is not None and self.events is not None:
            self.events.receive(endpoint, message.raw)

    def _events_closed(self, worker: WorkerHandle, leg_id: str) -> None:
        endpoint = self._endpoints.pop(leg_id, None)
        if endpoint is not None and self.events is not None:
            self.events.close_remote(worker.index, endpoint)

    def _leg_connected(self, worker: WorkerHandle, leg_id: str) -> None:
        leg = worker.legs.get(leg_id)
        if leg is not None and leg.connected_at is None:
            leg.connected_at = time.monotonic()

    def _leg_gone(self, worker: WorkerHandle, leg_id: str) -> None:
        self._events_closed(worker, leg_id)
        leg = worker.legs.pop(leg_id, None)
        if leg is None:
            return
        leg.closed = True
        self._release_unused(worker, leg.keys)
        self._on_leg_closed(leg)

    def _release_unused(self, worker: WorkerHandle, keys: list[int]) -> None:
        """Stop feeding a worker the producers none of its viewers watch any more."""
        still_used = {key for other in worker.legs.values() for key in other.keys}
        for key in keys:
            feed = worker.feeds.get(key)
            if feed is None or key in still_used:
                continue
            del worker.feeds[key]
            producer = self._producers.get(key)
            if producer is not None:
                producer.detach(feed)
            worker.control.send(ProducerClosed(key))
