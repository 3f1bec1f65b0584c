"""The SFU node: the rooms this process serves and the lifetime of every session in them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web
from aiortc import RTCDataChannel

from common.tasks import stop_task
from sfu import aiortc_private
from sfu.admission import Admission, Ticket
from sfu.background import spawn
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
from sfu.layers import Quality
from sfu.network_quality import Window
from sfu.offer import Offer
from sfu.peer import PeerLeg, negotiate
from sfu.publisher import Publisher
from sfu.publisher_quality import PublisherQuality, ScoredPublisher
from sfu.room import Room
from sfu.rtmp.connection import RtmpConnection
from sfu.rtmp.publisher import RtmpOptions, RtmpPublisher
from sfu.session import PublisherSession, Session, ViewerSession
from sfu.settings import NodeSettings
from sfu.viewer import Viewer
from sfu.worker_pool import WorkerPool
from signaling.claims import Claims, Grant
from signaling.errors import ApiError
from signaling.live.schema import event

logger = logging.getLogger("shopcast.sfu.node")

SENDER_REPORT_INTERVAL_S = 1.0

CohostAdmission = Callable[[str, str], Awaitable[bool]]
"""(room, identity) -> may this identity co-host now (an invitation stands)?"""

BanCheck = Callable[[str, str], Awaitable[bool]]
"""(room, identity) -> is this identity banned from the room (the control plane's moderation)?"""

ForbidCheck = Callable[[str], Awaitable[ApiError | None]]
"""room -> the ``403 room_forbidden`` to answer while the room is forbidden (the control
plane's compliance forbid, ``signaling/live/forbid.py``), else None."""


class RoomObserver(Protocol):
    """Told when a room's publishers come and go: FLV output, events, webhooks hang here."""

    def publisher_live(self, room: Room, publisher: PublisherSession) -> None: ...

    def publisher_left(self, room: Room, publisher: PublisherSession) -> None: ...


class SessionObserver(Protocol):
    """Told when a session starts (answered) and ends: the control plane's reports. Every
    kind of session arrives here, viewers in worker processes included."""

    def session_started(self, session: Session, name: str = "") -> None: ...

    def session_ended(self, session: Session) -> None: ...


class SfuNode:
    """Owns rooms and sessions; the only place that creates or ends a WebRTC session.

    What it tells others is fixed at construction: ``events`` serves participants' ``events``
    data channels (here and in the workers), ``cohost_admission`` asks the control plane for a
    co-host's invitation (None: no invitation needed), ``banned`` whether an identity is banned
    from a room (asked by the WHIP, WHEP and FLV doors; None: nobody is), ``forbidden`` whether
    the room is forbidden (the same doors and ``/ws``; None: never), the observers hear of
    publishers and sessions coming and going."""

    def __init__(
        self,
        settings: NodeSettings,
        *,
        events: EventBridge | None = None,
        cohost_admission: CohostAdmission | None = None,
        banned: BanCheck | None = None,
        forbidden: ForbidCheck | None = None,
        room_observers: Sequence[RoomObserver] = (),
        session_observers: Sequence[SessionObserver] = (),
    ) -> None:
        self.settings = settings
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, Session] = {}
        self._rtc_configuration = rtc_configuration(
            settings.stun_url, settings.turn_url, settings.turn_username, settings.turn_password
        )
        self._ticker: asyncio.Task[None] | None = None
        self.room_observers = tuple(room_observers)
        self.session_observers = tuple(session_observers)
        self.events = events
        self.cohost_admission = cohost_admission
        self.admission = Admission(settings)
        self.banned = banned
        self.forbidden = forbidden
        self.workers = (WorkerPool(settings, self._session_closed, events)
                        if settings.workers > 0 else None)
        self.network_quality = PublisherQuality(self._network_quality_changed)
        aiortc_private.install()  # checked already by the command line; once per process
        use_host_addresses(settings.ice_hosts, add_loopback=settings.ice_loopback)

    async def start(self) -> None:
        if self.workers is not None:
            await self.workers.start()
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        await stop_task(self._ticker)
        await asyncio.gather(*(session.close() for session in list(self.sessions.values())))
        if self.events is not None:
            await self.events.close()
        if self.workers is not None:
            await self.workers.stop()

    async def publish(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None = None,
        *, address: str | None = None,
    ) -> tuple[Publisher, str]:
        """Start a WHIP session. The first publisher is the anchor (slot 0); a further one needs
        the ``cohost`` grant (else ``PublisherExists``), an invitation (``NotInvited``) and a free
        slot (``RoomFull``), and must send the room's codecs (``CodecMismatch``). An ``admin``
        token needs no invitation. ``address``: the client's, for the node's session limits
        (``sfu/admission.py``: ``TooManySessions``, ``TooManyPending``)."""
        ticket = self.admission.admit(room_name, identity, address, "whip")
        try:
            return await self._publish(room_name, identity, offer, claims, ticket)
        except BaseException:
            self.admission.release(ticket)
            raise

    async def _publish(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None, ticket: Ticket
    ) -> tuple[Publisher, str]:
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
            on_closed=self._session_closed,
            claims=claims,
            on_events_channel=self._events_opened,
            on_live=self._publisher_live,
            slot=slot,
            track_slots=room.slots[slot],
            keyframe_throttle_s=self.settings.keyframe_throttle_ms / 1000,
            fast_start_s=self.settings.fast_start_ms / 1000,
        )
        required = room.codecs() if slot > 0 else None
        self.admission.bind(ticket, publisher)
        self.rooms[room_name] = room
        room.publishers[publisher.id] = publisher
        answer = await self._negotiate(
            publisher, offer, lambda: publisher.prepare(offer, required)
        )
        self._session_started(publisher, claims)
        return publisher, answer

    async def publish_rtmp(
        self, room_name: str, claims: Claims, connection: RtmpConnection
    ) -> RtmpPublisher:
        """Start an RTMP publish (``sfu/rtmp/door.py`` authorized it) as the room's anchor, or
        resume the same identity's session whose encoder dropped within the grace period.
        Co-hosts join over WHIP (``PublisherExists`` here)."""
        room = self.rooms.get(room_name)
        if room is not None:
            for publisher in room.publishers.values():
                if (isinstance(publisher, RtmpPublisher) and publisher.waiting_for_return
                        and publisher.identity == claims.identity):
                    publisher.resume(connection)
                    return publisher
        room = room or Room(room_name, self.settings.max_publishers)
        if self._publisher_slot(room, room_name, claims) != 0:
            raise PublisherExists(
                f"room {room_name!r} already has an anchor; co-hosts join over WHIP")
        rtmp = RtmpPublisher(
            room_name, claims.identity,
            claims=claims, slot=0, track_slots=room.slots[0], connection=connection,
            options=RtmpOptions(keyframe_throttle_s=self.settings.keyframe_throttle_ms / 1000,
                                grace_s=self.settings.rtmp_grace_ms / 1000),
            on_live=self._publisher_live, on_closed=self._session_closed,
            on_warning=self._publisher_warning,
        )
        self.rooms[room_name] = room
        room.publishers[rtmp.id] = rtmp
        self.sessions[rtmp.id] = rtmp
        self._session_started(rtmp, claims)
        return rtmp

    async def play(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None = None,
        *, address: str | None = None, quality: Quality = "auto",
    ) -> tuple[ViewerSession, str]:
        """Start a WHEP session on a live room (in a worker process when there are workers);
        ``NotLive`` otherwise. ``address`` as for ``publish``; ``quality`` picks the video
        layer (``sfu/layers.py``; a worker's viewers get the slot's high layer)."""
        room = self.rooms.get(room_name)
        if room is None or not room.live:
            raise NotLive(f"room {room_name!r} is not live")
        ticket = self.admission.admit(room_name, identity, address, "whep")
        try:
            return await self._play(room_name, identity, offer, claims, ticket, quality)
        except BaseException:
            self.admission.release(ticket)
            raise

    async def _play(
        self, room_name: str, identity: str, offer: Offer, claims: Claims | None, ticket: Ticket,
        quality: Quality = "auto",
    ) -> tuple[ViewerSession, str]:
        room = self.rooms.get(room_name)
        if room is None or not room.live:  # the anchor left while the offer waited
            raise NotLive(f"room {room_name!r} is not live")
        if self.workers is not None:
            remote, answer = await self.workers.open_viewer(
                room_name, identity, offer.sdp, room.layout(), room.producers(), claims
            )
            self.admission.bind(ticket, remote)
            room.viewers[remote.id] = remote
            self.sessions[remote.id] = remote
            self._session_started(remote, claims)
            return remote, answer
        viewer = Viewer(
            room_name,
            identity,
            self._rtc_configuration,
            public_ip=self.settings.ice_public_ip,
            on_closed=self._session_closed,
            claims=claims,
            on_events_channel=self._events_opened,
            quality=quality,
        )
        layout, producers = room.layout(), room.producers()
        self.admission.bind(ticket, viewer)
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
        self.sessions[leg.id] = leg
        return await negotiate(leg, offer, prepare)

    def _session_started(self, session: Session, claims: Claims | None) -> None:
        """Report an answered session, unless it already closed (then it never joined)."""
        if session.closed or session.id not in self.sessions:
            return
        for observer in self.session_observers:
            observer.session_started(session, claims.name if claims is not None else "")

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

    async def is_banned(self, room_name: str, identity: str) -> bool:
        """Whether the control plane bans ``identity`` from ``room_name`` (the doors refuse it;
        a ban also kicks its open sessions through the control plane)."""
        return self.banned is not None and await self.banned(room_name, identity)

    async def refuse_forbidden(self, room_name: str) -> None:
        """Raise the control plane's ``403 room_forbidden`` while ``room_name`` is forbidden
        (a forbid also ends the room's publishers through the control plane)."""
        if self.forbidden is not None and (refusal := await self.forbidden(room_name)):
            raise refusal

    def session(self, room_name: str, session_id: str, role: str) -> Session:
        """The ``role`` session ``session_id`` of ``room_name`` (a WHIP/WHEP resource)."""
        session = self.sessions.get(session_id)
        if session is None or session.room != room_name or session.role != role:
            raise SessionNotFound(f"no {role} session {session_id!r} in room {room_name!r}")
        return session

    def _publisher_live(self, publisher: PublisherSession) -> None:
        room = self.rooms.get(publisher.room)
        if room is None:
            return
        for viewer in list(room.viewers.values()):  # a co-host joining viewers already here
            for producer in publisher.producers:
                viewer.on_producer_added(producer)
        if self.workers is not None:
            self.workers.producers_added(room.name, list(publisher.producers))
        for observer in self.room_observers:
            observer.publisher_live(room, publisher)

    def _publisher_warning(self, publisher: PublisherSession, code: str, message: str) -> None:
        """Tell the room (the anchor's console) that the encoder should change a setting."""
        logger.warning("publisher %s room=%s: %s (%s)", publisher.id, publisher.room, message,
                       code)
        self._room_event(publisher.room, "publisher_warning", identity=publisher.identity,
                         code=code, message=message)

    def _network_quality_changed(self, publisher: ScoredPublisher, score: int, w: Window
                                 ) -> None:
        """A publisher's score changed: the room hears it (the anchor's page, admins)."""
        self._room_event(
            publisher.room, "network_quality", identity=publisher.identity,
            slot=publisher.slot, score=score, loss=round(w.loss, 4),
            jitter_ms=round(w.jitter_ms, 1), rtt_ms=w.rtt_ms,
            bitrate_kbps=round(w.bitrate_bps / 1000),
        )

    def _room_event(self, room: str, type_: str, **fields: object) -> None:
        if self.events is not None:
            spawn(self.events.bus.publish(room, event(type_, **fields)))

    def _session_closed(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self.admission.session_ended(session.id)
        self._leave_room(session)
        for observer in self.session_observers:  # after publisher_left: tracks go first
            observer.session_ended(session)

    def _leave_room(self, session: Session) -> None:
        if self.events is not None and isinstance(session, PeerLeg):
            self.events.close_local(session.id, session.room)
        room = self.rooms.get(session.room)
        if room is None:
            return
        publisher = room.publishers.get(session.id)
        if publisher is not None:
            room.remove_publisher(publisher)
            if self.workers is not None:
                for producer in publisher.producers:
                    self.workers.producer_closed(producer)
            if publisher.connected_at is not None:
                for observer in self.room_observers:
                    observer.publisher_left(room, publisher)
        else:
            room.remove_viewer(session)
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
            self.network_quality.tick(time.monotonic(), [
                p for room in self.rooms.values() for p in room.publishers.values()
                if isinstance(p, Publisher)])


NODE_KEY = web.AppKey("sfu_node", SfuNode)
