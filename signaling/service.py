"""The control plane in one object: settings, store, bus, webhooks, rooms and the reporter.

The launcher builds one ``Signaling``, hangs it on the app under ``SIGNALING_KEY``, starts it
before serving and closes it after; the SFU gets ``signaling.reporter`` to report sessions and
hands its ``MediaControl`` to ``attach_media``. ``signaling.live`` is the event gateway that
every transport of client events (data channels, ``/ws/events``) calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from signaling.backends import open_backends
from signaling.live.gateway import EventGateway
from signaling.live.likes import RATE as LIKE_RATE
from signaling.live.resume import ResumeLimits
from signaling.live.schema import LAYOUTS
from signaling.media import MediaControl
from signaling.rooms import RoomService
from signaling.sessions import SessionReporter
from signaling.store import NodeRecord
from signaling.webhooks import Webhooks, WebhookSettings, webhook_key


@dataclass
class SignalingSettings:
    secret: str
    redis_url: str = ""
    redis_prefix: str = "shopcast"
    event_history: int = 1000
    node_id: str = field(default_factory=lambda: "N_" + uuid.uuid4().hex[:10])
    auto_create_rooms: bool = True
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    layout: str = LAYOUTS[0]  # what `state` tells pages about the co-host layout
    resume: ResumeLimits = field(default_factory=ResumeLimits)  # per connection
    like_rate: float = LIKE_RATE  # like taps per second per identity per room (0 = no limit)
    timeline_chat: bool = False  # the product timeline keeps chat messages too


class Signaling:
    def __init__(self, settings: SignalingSettings, media: MediaControl | None = None) -> None:
        self.settings = settings
        self.store, self.bus = open_backends(
            settings.redis_url, settings.redis_prefix, settings.event_history
        )
        if not settings.webhooks.secret:  # never the token key: receivers must not mint tokens
            settings.webhooks.secret = webhook_key(settings.secret)
        if settings.webhooks.secret == settings.secret:
            raise ValueError("the webhook key must differ from the token secret")
        self.webhooks = Webhooks(settings.webhooks)
        self.rooms = RoomService(
            self.store, self.bus, self.webhooks, media, auto_create=settings.auto_create_rooms,
            before_drop=lambda room: self.live.timeline.put_aside(room),
        )
        self.reporter = SessionReporter(self.rooms, settings.node_id)
        # ``shopcast serve``: this process is the only node and is not in the registry, so
        # the playback plan asks it directly (multi-node: None, the registry answers).
        self.local_node: Callable[[], NodeRecord] | None = None
        # chat and commerce: the SFU's data-channel bridge and /ws/events both call this
        self.live = EventGateway(self.store, self.bus, self.webhooks, kick=self.rooms.kick,
                                 layout=settings.layout, resume=settings.resume,
                                 like_rate=settings.like_rate,
                                 timeline_chat=settings.timeline_chat,
                                 end_publishing=lambda room: self.rooms.media.end_publishers(room))

    def attach_media(
        self, media: MediaControl, *, local_node: Callable[[], NodeRecord] | None = None
    ) -> None:
        """Act on this process's media plane: REST close/kick/mute go to ``media``, and the
        playback plan asks ``local_node`` (``shopcast serve``: the one node, not in the
        registry). The one binding made after construction: the media plane is built from
        this object's bus and reporter, and they in turn report to ``rooms``; a multi-node
        deployment breaks the same cycle with the bus instead."""
        self.rooms.media = media
        self.local_node = local_node

    async def start(self) -> None:
        await self.store.start()
        await self.bus.start()
        await self.webhooks.start()
        await self.reporter.start()

    async def close(self) -> None:
        await self.live.close()
        await self.reporter.close()
        await self.webhooks.close()
        await self.bus.close()
        await self.store.close()


SIGNALING_KEY = web.AppKey("signaling", Signaling)
