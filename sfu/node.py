"""The SFU node: the rooms this process serves and the lifetime of every peer leg in them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web
from aiortc import RTCDataChannel

from common.tasks import stop_task
from sfu import aiortc_private
from sfu.errors import (
    NoAnchor,
    NotInvited,
    NotLive,
    PublisherExists,
    RoomFull,
    SessionNotFound,
)
from sfu.event_bridge import EventBridge, open_channel
from sfu.ice import rtc_configuration, use_host_addresses
from sfu.offer import Offer
from sfu.peer import PeerLeg, negotiate
from sfu.publisher import Publisher
from sfu.room import Room, ViewerLeg
from sfu.settings import NodeSettings
from sfu.viewer import Viewer
from sfu.worker_pool import RemoteViewer, WorkerPool
from signaling.claims import Claims, Grant

logger = logging.getLogger("shopcast.sfu.node")

SENDER_REPORT_INTERVAL_S = 1.0

CohostAdmission = Callable[[str, str], Awaitable[bool]]
"""(room, identity) -> may this identity co-host now (an invitation stands)?"""


class RoomObserver(Protocol):
    """Told when a room's publishers come and go: FLV output, events, webhooks hang here."""

    def publisher_live(self, room: Room, publisher: Publisher) -> None: ...

    def publisher_left(self, room: Room, publisher: Publisher) -> None: ...


class SessionObserver(Protocol):
    """Told when a WHIP/WHEP session starts (answered) and ends: the control plane's reports.

    Ends of viewers in worker processes arrive here too, as ``RemoteViewer`` legs."""

    def session_started(self, leg: PeerLeg | RemoteViewer, name: str = "") -> None: ...

    def session_ended(self, leg: PeerLeg | RemoteViewer) -> None: ...


class SfuNode:
    """Owns rooms and legs; the only place that creates or ends a WebRTC session."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.rooms: dict[str, Room] = {}
        self.legs: dict[str, PeerLeg | RemoteViewer] = {}
        self._rtc_configuration = rtc_configuration(
            settings.stun_url, settings.turn_url, settings.turn_username, settings.turn_password
        )
        self._ticker: asyncio.Task[None] | None = None
        self.observers: list[RoomObserver] = []
        self.sessions: list[SessionObserver] = []
        self.events: EventBridge | None = None
        self.cohost_admission: CohostAdmission | None = None  # the control plane's invitations
        self.workers = WorkerPool(settings, self._leg_closed) if settings.workers > 0 else None
        aiortc_private.install()  # checked already by the command line; once per process
        use_host_addresses(settings.ice_hosts, add_loopback=settings.ice_loopback)

    async def start(self) -> None:
        if self.workers is not None:
            await self.workers.start()
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        await stop_task(self._ticker)
        await asyncio.gather(*(leg.close() for leg in list(self.legs.values())))
        if self.events is not None:
            await self.events.close()
        if self.workers is not None:
            await self.workers.stop()

    async def publish(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None = None
    ) -> tuple[Publisher, str]:
        """Start a WHIP session. The first publisher is the anchor (slot 0); a further one needs
        the ``cohost`` grant (else ``PublisherExists``), an invitation (``NotInvited``) and a free
        slot (``RoomFull``), and must send the room's codecs (``CodecMismatch``). An ``admin``
        token needs no invitation."""
        room = self.rooms.get(room_name) or Room(room_name, self.settings.max_publishers)
        slot = self._publisher_slot(room, room_name, claims)
        if slot > 0:
            await self._check_invitation(room_name, identity, claims)
            room = self.rooms.get(room_name) or room
            slot = self._publisher_slot(room, room_name, claims)  # taken while we asked?
        publisher = Publisher(
            room_name,
            identity,
            self._rtc_configuration,
            public_ip=self.settings.ice_public_ip,
            on_closed=self._leg_closed,
            on_live=self._publisher_live,
        )
        publisher.keyframe_interval_s = self.settings.keyframe_interval_ms / 1000
        publisher.fast_start_s = self.settings.fast_start_ms / 1000
        publisher.slot, publisher.track_slots = slot, room.slots[slot]
        required = room.codecs() if slot > 0 else None
        self._serve_events(publisher, claims)
        self.rooms[room_name] = room
        room.publishers[publisher.id] = publisher
        answer = await self._negotiate(
            publisher, offer, lambda: publisher.prepare(offer, required)
        )
        self._session_started(publisher, claims)
        return publisher, answer

    async def play(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None = None
    ) -> tuple[ViewerLeg, str]:
        """Start a WHEP session on a live room (in a worker process when there are workers);
        ``NotLive`` otherwise."""
        room = self.rooms.get(room_name)
        if room is None or not room.live:
            raise NotLive(f"room {room_name!r} is not live")
        if self.workers is not None:
            remote, answer = await self.workers.open_viewer(
                room_name, identity, offer.sdp, room.layout(), room.producers(), claims
            )
            room.viewers[remote.id] = remote
            self.legs[remote.id] = remote
            self._session_started(remote, claims)
            return remote, answer
        viewer = Viewer(
            room_name,
            identity,
            self._rtc_configuration,
            public_ip=self.settings.ice_public_ip,
            on_closed=self._leg_closed,
        )
        layout, producers = room.layout(), room.producers()
        self._serve_events(viewer, claims)
        room.viewers[viewer.id] = viewer
        answer = await self._negotiate(
            viewer, offer, lambda: viewer.prepare(offer, layout, producers)
        )
        self._session_started(viewer, claims)
        return viewer, answer

    def _publisher_slot(self, room: Room, room_name: str, claims: Claims | None) -> int:
        active = [p for p in room.publishers.values() if not p.closed]
        if not active:
            if claims is not None and not ({Grant.PUBLISH, Grant.ADMIN} & claims.grants):
                raise NoAnchor(f"room {room_name!r} has no anchor to co-host with")
            return 0
        if claims is None or not ({Grant.COHOST, Grant.ADMIN} & claims.grants):
            raise PublisherExists(f"room {room_name!r} already has a publisher")
        slot = room.free_slot()
        if slot is None:
            raise RoomFull(f"room {room_name!r} has its {room.max_publishers} publishers")
        return slot

    async def _check_invitation(self, room_name: str, identity: str, claims: Claims | None
                                ) -> None:
        if self.cohost_admission is None or (claims is not None and Grant.ADMIN in claims.grants):
            return
        if not await self.cohost_admission(room_name, identity):
            raise NotInvited(
                f"{identity!r} has no invitation to co-host room {room_name!r}: the anchor "
                f"invites with POST /api/v1/rooms/{room_name}/cohosts or `cohost_invite`"
            )

    async def _negotiate(self, leg: PeerLeg, offer: Offer, prepare: Callable[[], None]) -> str:
        self.legs[leg.id] = leg
        return await negotiate(leg, offer, prepare)

    def _session_started(self, leg: PeerLeg | RemoteViewer, claims: Claims | None) -> None:
        """Report an answered session, unless it already closed (then it never joined)."""
        if leg.closed or leg.id not in self.legs:
            return
        for observer in self.sessions:
            observer.session_started(leg, claims.name if claims is not None else "")

    def attach_events(self, bridge: EventBridge) -> None:
        """Serve participants' ``events`` data channels through ``bridge`` (and workers')."""
        self.events = bridge
        if self.workers is not None:
            self.workers.events = bridge

    def _serve_events(self, leg: PeerLeg, claims: Claims | None) -> None:
        leg.claims = claims
        leg.on_events_channel = self._events_opened

    def _events_opened(self, leg: PeerLeg, channel: RTCDataChannel) -> None:
        bridge = self.events
        if bridge is None or leg.claims is None:
            return
        open_channel(
            channel, leg.room, leg.claims,
            opened=lambda endpoint: bridge.open_local(leg.id, endpoint),
            received=bridge.receive,
            closed=lambda: bridge.close_local(leg.id, leg.room),
        )

    def leg(self, room_name: str, leg_id: str, role: str) -> PeerLeg | RemoteViewer:
        leg = self.legs.get(leg_id)
        if leg is None or leg.room != room_name or leg.role != role:
            raise SessionNotFound(f"no {role} session {leg_id!r} in room {room_name!r}")
        return leg

    def _publisher_live(self, publisher: Publisher) -> None:
        room = self.rooms.get(publisher.room)
        if room is None:
            return
        for viewer in list(room.viewers.values()):  # a co-host joining viewers already here
            for producer in publisher.producers:
                viewer.on_producer_added(producer)
        if self.workers is not None:
            self.workers.producers_added(room.name, publisher.producers)
        for observer in self.observers:
            observer.publisher_live(room, publisher)

    def _leg_closed(self, leg: PeerLeg | RemoteViewer) -> None:
        self.legs.pop(leg.id, None)
        self._leave_room(leg)
        for observer in self.sessions:  # after publisher_left: tracks go before their session
            observer.session_ended(leg)

    def _leave_room(self, leg: PeerLeg | RemoteViewer) -> None:
        if self.events is not None and isinstance(leg, PeerLeg):
            self.events.close_local(leg.id, leg.room)
        room = self.rooms.get(leg.room)
        if room is None:
            return
        if isinstance(leg, Publisher):
            room.remove_publisher(leg)
            if self.workers is not None:
                for producer in leg.producers:
                    self.workers.producer_closed(producer)
            if leg.connected_at is not None:
                for observer in self.observers:
                    observer.publisher_left(room, leg)
        elif isinstance(leg, Viewer | RemoteViewer):
            room.remove_viewer(leg)
        if room.empty:
            self.rooms.pop(room.name, None)

    async def _tick(self) -> None:
        """Once a second: the viewers' sender reports (kept off the per-packet path)."""
        while True:
            await asyncio.sleep(SENDER_REPORT_INTERVAL_S)
            for room in list(self.rooms.values()):
                for viewer in list(room.viewers.values()):
                    if isinstance(viewer, Viewer):
                        viewer.send_sender_reports()
            if self.workers is not None:
                self.workers.send_sender_reports()


NODE_KEY = web.AppKey("sfu_node", SfuNode)
