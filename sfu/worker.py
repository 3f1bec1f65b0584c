"""A worker process: one event loop on one core, owning a share of the node's viewer legs.

Run as ``python -m sfu.worker`` by the WorkerPool with two inherited sockets. Canonical packets
arrive once per worker and are fanned out here by mirror Producers, through the same Consumer
code as in a single process: SRTP protect and a UDP send per viewer. Control messages are the
declared ones of ``sfu/worker_protocol.py``, handled through the table in ``Worker.__init__``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket

from aiortc import RTCDataChannel

from sfu import aiortc_private, events_channel
from sfu.errors import MediaError
from sfu.event_bridge import EventGate
from sfu.events_channel import EventsChannel
from sfu.ice import rtc_configuration, use_host_addresses
from sfu.ipc import ControlChannel, Dispatch, read_media
from sfu.offer import parse_offer
from sfu.peer import PeerLeg, negotiate
from sfu.producer import Producer
from sfu.settings import NodeSettings
from sfu.viewer import Viewer
from sfu.worker_protocol import (
    ClientEvent,
    CloseLeg,
    CloseLegReply,
    Direction,
    ErrorInfo,
    EventsClosed,
    EventsOpen,
    EventsReady,
    KeyframeRequest,
    LegClosed,
    LegConnected,
    Play,
    PlayReply,
    ProducerClosed,
    ProducerOpen,
    ProducersAdded,
    Ready,
    RoomEvent,
    SenderReport,
    Shutdown,
    Stats,
    ToLeg,
)

logger = logging.getLogger("shopcast.sfu.worker")

STATS_INTERVAL_S = 1.0


class Worker:
    """Hosts viewer legs for the publisher's process and reports what happens to them."""

    def __init__(
        self, settings: NodeSettings, control_sock: socket.socket, media_sock: socket.socket
    ) -> None:
        self.settings = settings
        self.producers: dict[int, Producer] = {}
        self.viewers: dict[str, Viewer] = {}
        self.channels: dict[str, EventsChannel] = {}
        self.gates: dict[str, EventGate] = {}  # leg -> its room events, held until join state
        self.event_rooms: dict[str, set[str]] = {}
        self._configuration = rtc_configuration(
            settings.stun_url, settings.turn_url, settings.turn_username, settings.turn_password
        )
        self._control_sock = control_sock
        self._media_sock = media_sock
        self._stopped = asyncio.Event()
        self.dispatch = Dispatch(Direction.TO_WORKER)
        on = self.dispatch.on
        on(ProducerOpen, self._add_producer)
        on(ProducerClosed, lambda m: self._close_producer(m.key))
        on(ProducersAdded, self._producers_added)
        on(SenderReport, self._sender_report)
        self.dispatch.on_request(Play, self._play)
        self.dispatch.on_request(CloseLeg, self._close_leg)
        on(RoomEvent, self._room_event)
        on(ToLeg, self._to_leg)
        on(EventsReady, self._events_ready)
        on(Shutdown, lambda _: self._stopped.set())
        self.dispatch.check()
        use_host_addresses(settings.ice_hosts, add_loopback=settings.ice_loopback)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.control = ControlChannel(
            self._control_sock, self.dispatch, self._stopped.set, peer="pool"
        )
        loop.add_reader(self._media_sock.fileno(), read_media(self._media_sock, self._deliver))
        self.control.send(Ready(os.getpid()))
        ticker = asyncio.create_task(self._tick())
        await self._stopped.wait()
        ticker.cancel()
        loop.remove_reader(self._media_sock.fileno())
        await asyncio.gather(*(v.close() for v in list(self.viewers.values())))
        self.control.close()

    def _deliver(self, key: int, keyframe: bool, packet: bytes) -> None:
        producer = self.producers.get(key)
        if producer is not None:
            producer.relay(packet, keyframe)

    def _sender_report(self, message: SenderReport) -> None:
        producer = self.producers.get(message.key)
        if producer is not None:
            producer.on_sender_report(message.ntp, message.rtp)

    def _producers_added(self, message: ProducersAdded) -> None:
        added = [self.producers[k] for k in message.keys if k in self.producers]
        for viewer in list(self.viewers.values()):
            if viewer.room == message.room:
                for producer in added:
                    viewer.on_producer_added(producer)

    def _room_event(self, message: RoomEvent) -> None:
        for leg_id in self.event_rooms.get(message.room, ()):
            self.gates[leg_id].deliver(message.packed)

    def _to_leg(self, message: ToLeg) -> None:
        channel = self.channels.get(message.leg)
        if channel is not None:
            channel.send(message.packed)

    def _events_ready(self, message: EventsReady) -> None:
        gate = self.gates.get(message.leg)
        if gate is not None:
            gate.release()

    def _add_producer(self, message: ProducerOpen) -> None:
        key = message.key

        def request_keyframe(_ssrc: int) -> None:
            self.control.send(KeyframeRequest(key))

        self.producers[key] = Producer(
            message.kind,
            message.codec.parameters_(),
            publisher_id=message.publisher,
            request_keyframe=request_keyframe,
            keyframe_throttle_s=self.settings.keyframe_throttle_ms / 1000,
            fast_start_s=self.settings.fast_start_ms / 1000,
            ssrc=message.ssrc,
            key=key,
            mirror=True,
            slot_index=message.slot,
            identity=message.identity,
        )

    def _close_producer(self, key: int) -> None:
        producer = self.producers.pop(key, None)
        if producer is None:
            return
        for sink in producer.close():
            sink.close()
        for viewer in list(self.viewers.values()):
            viewer.on_producer_closed(producer)

    async def _play(self, request: Play) -> PlayReply:
        viewer = Viewer(
            request.room,
            request.identity,
            self._configuration,
            public_ip=self.settings.ice_public_ip,
            on_closed=self._leg_closed,
            on_events_channel=self._events_opened if request.events else None,
        )
        producers = [self.producers[k] for k in request.producers if k in self.producers]
        viewer.pc.on("connectionstatechange", lambda: self._leg_state(viewer))
        try:
            offer = parse_offer(request.offer, want="recv")
            layout = request.layout.room_layout()
            self.viewers[viewer.id] = viewer
            answer = await negotiate(
                viewer, offer, lambda: viewer.prepare(offer, layout, producers)
            )
        except MediaError as exc:
            self.viewers.pop(viewer.id, None)
            return PlayReply(error=ErrorInfo.of(exc))
        return PlayReply(leg=viewer.id, sdp=answer)

    async def _close_leg(self, request: CloseLeg) -> CloseLegReply:
        viewer = self.viewers.get(request.leg)
        if viewer is not None:
            await viewer.close()
        return CloseLegReply(viewer is not None)

    def _events_opened(self, leg: PeerLeg, channel: RTCDataChannel) -> None:
        """The publisher's process handles the events; this worker relays and fans out."""
        leg_id, room = leg.id, leg.room
        send = self.control.send
        events = self.channels[leg_id] = EventsChannel(
            channel, lambda raw: send(ClientEvent(leg_id, raw))
        )
        self.gates[leg_id] = EventGate(events.send)
        self.event_rooms.setdefault(room, set()).add(leg_id)
        channel.on("close", lambda: self._events_closed(leg_id, room))
        send(EventsOpen(leg_id))

    def _events_closed(self, leg_id: str, room: str) -> None:
        self.gates.pop(leg_id, None)
        if self.channels.pop(leg_id, None) is None:
            return
        legs = self.event_rooms.get(room, set())
        legs.discard(leg_id)
        if not legs:
            self.event_rooms.pop(room, None)
        self.control.send(EventsClosed(leg_id))

    def _leg_state(self, leg: PeerLeg) -> None:
        """Tell the pool once the leg connected: the node's pending-session limit frees it."""
        if leg.pc.connectionState == "connected" and leg.id in self.viewers:
            self.control.send(LegConnected(leg.id))

    def _leg_closed(self, leg: PeerLeg) -> None:
        self._events_closed(leg.id, leg.room)
        if self.viewers.pop(leg.id, None) is not None:
            self.control.send(LegClosed(leg.id))

    async def _tick(self) -> None:
        """Sender reports for every viewer and counters for the node's metrics, once a second."""
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            for viewer in self.viewers.values():
                viewer.send_sender_reports()
            self.control.send(Stats(
                counters={
                    "retransmits": {k: p.retransmits for k, p in self.producers.items()},
                    "fast_starts": {k: p.fast_starts for k, p in self.producers.items()},
                    "events_slow_closed": {0: events_channel.stats.slow_closed},
                },
                viewers=len(self.viewers),
                bad_messages=dict(self.control.bad),
            ))


def main() -> None:
    parser = argparse.ArgumentParser(description="ShopCast SFU worker process")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--media-fd", type=int, required=True)
    parser.add_argument("--settings", required=True, help="NodeSettings as JSON")
    args = parser.parse_args()
    settings = NodeSettings(**json.loads(args.settings))
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s[worker {os.getpid()}] %(message)s",
    )
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    aiortc_private.install_or_exit()
    control = socket.socket(fileno=args.control_fd)
    media = socket.socket(fileno=args.media_fd)
    control.setblocking(False)
    media.setblocking(False)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(Worker(settings, control, media).run())


if __name__ == "__main__":
    main()
