"""The publisher's process side of the worker processes: spawn them, route viewers to them, and
feed each worker a room's canonical packets once, however many of its viewers watch."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable

from sfu.event_bridge import Endpoint, EventBridge
from sfu.ipc import ControlChannel, MediaSender, Message, codec_to_dict, socketpair
from sfu.producer import Producer
from sfu.room_layout import RoomLayout
from sfu.settings import NodeSettings
from signaling.claims import Claims
from signaling.errors import ApiError

logger = logging.getLogger("shopcast.sfu.workers")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


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

    def __init__(self, leg_id: str, room: str, identity: str, worker: WorkerHandle,
                 keys: list[int], claims: Claims | None = None) -> None:
        self.id = leg_id
        self.claims = claims
        self.room = room
        self.identity = identity
        self.worker = worker
        self.keys = keys
        self.closed = False

    @property
    def state(self) -> str:
        return "closed" if self.closed else "open"

    async def close(self) -> None:
        if not self.closed:
            await self.worker.control.request({"op": "close_leg", "leg": self.id})

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
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.alive = True


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

    async def start(self) -> None:
        settings_json = json.dumps(dataclasses.asdict(self._settings))
        for index in range(self.count):
            control_here, control_there = socketpair()
            media_here, media_there = socketpair()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "sfu.worker",
                "--control-fd", str(control_there.fileno()),
                "--media-fd", str(media_there.fileno()),
                "--settings", settings_json,
                pass_fds=(control_there.fileno(), media_there.fileno()),
            )
            control_there.close()
            media_there.close()
            media_here.shutdown(0)  # the publisher's process only sends media
            control = ControlChannel(control_here, functools.partial(self._on_message, index))
            handle = WorkerHandle(index, process, control, MediaSender(media_here))
            self.workers.append(handle)
        async with asyncio.timeout(START_TIMEOUT_S):
            await asyncio.gather(*(w.ready for w in self.workers))
        logger.info("%d worker processes ready: pids %s", self.count,
                    [w.process.pid for w in self.workers])

    async def stop(self) -> None:
        self._stopping = True
        for worker in self.workers:
            worker.control.send({"op": "shutdown"})
        for worker in self.workers:
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await worker.process.wait()
            except TimeoutError:
                worker.process.kill()
                await worker.process.wait()
            worker.control.close()

    async def open_viewer(
        self, room: str, identity: str, offer_sdp: str, layout: RoomLayout,
        producers: list[Producer], claims: Claims | None = None,
    ) -> tuple[RemoteViewer, str]:
        """Create a viewer leg in the least loaded worker; raises the worker's ApiError."""
        alive = [w for w in self.workers if w.alive]
        if not alive:
            raise ApiError(503, "no_workers", "no media worker is running")
        worker = min(alive, key=lambda w: len(w.legs))
        for producer in producers:
            self._announce(worker, producer)
        reply = await worker.control.request(
            {"op": "play", "room": room, "identity": identity, "offer": offer_sdp,
             "layout": layout.to_message(), "producers": [p.key for p in producers],
             "events": claims is not None}
        )
        if "error" in reply:
            self._release_unused(worker, [p.key for p in producers])
            status, code, message = reply["error"]
            raise ApiError(status, code, message)
        leg = RemoteViewer(
            reply["leg"], room, identity, worker, [p.key for p in producers], claims
        )
        worker.legs[leg.id] = leg
        return leg, str(reply["sdp"])

    def producers_added(self, room: str, producers: list[Producer]) -> None:
        """A co-host went live: workers with viewers of the room start receiving it."""
        for worker in self.workers:
            if not any(leg.room == room for leg in worker.legs.values()):
                continue
            for producer in producers:
                self._announce(worker, producer)
            worker.control.send({"op": "producers_added", "room": room,
                                 "keys": [p.key for p in producers]})

    def producer_closed(self, producer: Producer) -> None:
        self._producers.pop(producer.key, None)
        for worker in self.workers:
            if worker.feeds.pop(producer.key, None) is not None:
                worker.control.send({"op": "producer_closed", "key": producer.key})

    def send_sender_reports(self) -> None:
        for worker in self.workers:
            for key in worker.feeds:
                producer = self._producers.get(key)
                if producer is not None:
                    ntp, rtp = producer.sender_report()
                    worker.control.send({"op": "sr", "key": key, "ntp": ntp, "rtp": rtp})

    def counter(self, name: str, key: int) -> int:
        """A per-track counter summed over the workers' mirrors (their once-a-second stats)."""
        return sum(w.counters.get(name, {}).get(key, 0) for w in self.workers)

    def _announce(self, worker: WorkerHandle, producer: Producer) -> None:
        """Create the worker's mirror of ``producer`` and start feeding it, once per worker.

        One step, so concurrent viewers on one worker share a single mirror.
        """
        if producer.key in worker.feeds or producer.closed:
            return
        self._producers[producer.key] = producer
        worker.control.send(
            {"op": "producer", "key": producer.key, "kind": producer.kind,
             "codec": codec_to_dict(producer.codec), "ssrc": producer.ssrc,
             "publisher": producer.publisher_id, "slot": producer.slot_index,
             "identity": producer.identity}
        )
        feed = WorkerFeed(producer.key, worker.media)
        worker.feeds[producer.key] = feed
        producer.attach(feed)

    def _on_message(self, index: int, message: Message) -> None:
        worker = self.workers[index]
        op = message["op"]
        if op == "ready":
            if not worker.ready.done():
                worker.ready.set_result(None)
        elif op == "keyframe":
            producer = self._producers.get(message["key"])
            if producer is not None:
                producer.request_keyframe()
        elif op == "leg_closed":
            self._leg_gone(worker, message["leg"])
        elif op == "stats":
            worker.counters = {name: dict(counts)
                               for name, counts in message["counters"].items()}
        elif op in ("events_open", "client_event", "events_closed"):
            self._on_events(worker, op, message)
        elif op == "channel_closed":
            worker.alive = False
            if not self._stopping:
                logger.error("worker %d (pid %s) is gone; its viewers are lost", index,
                             worker.process.pid)
            for leg_id in list(worker.legs):
                self._leg_gone(worker, leg_id)

    def _on_events(self, worker: WorkerHandle, op: str, message: Message) -> None:
        """A worker's participant opened, used or closed its ``events`` channel."""
        leg_id = message["leg"]
        bridge = self.events
        leg = worker.legs.get(leg_id)
        if bridge is None:
            return
        if op == "events_open" and leg is not None and leg.claims is not None:
            control = worker.control
            endpoint = Endpoint(
                leg.room, leg.claims,
                lambda packed: control.send({"op": "to_leg", "leg": leg_id, "packed": packed}),
                lambda: control.send({"op": "events_ready", "leg": leg_id}),
            )
            self._endpoints[leg_id] = endpoint
            room = leg.room
            bridge.open_remote(
                worker.index,
                lambda packed: control.send({"op": "event", "room": room, "packed": packed}),
                endpoint,
            )
        elif op == "client_event" and leg_id in self._endpoints:
            bridge.receive(self._endpoints[leg_id], message["raw"])
        elif op == "events_closed":
            self._events_closed(worker, leg_id)

    def _events_closed(self, worker: WorkerHandle, leg_id: str) -> None:
        endpoint = self._endpoints.pop(leg_id, None)
        if endpoint is not None and self.events is not None:
            self.events.close_remote(worker.index, endpoint.room)

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
            worker.control.send({"op": "producer_closed", "key": key})
