"""SessionReporter: how the media plane tells the control plane about sessions and tracks.

The SFU's callbacks are synchronous and sit near the media path, so every method here only
enqueues; one task applies the reports in order (a session's join before its tracks, its
tracks before its leave), so store, events and webhooks never run on the SFU's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from common.tasks import stop_task
from signaling.rooms import RoomService
from signaling.store import JsonObject, ParticipantRecord, TrackRecord, Transport

logger = logging.getLogger("shopcast.signaling.sessions")

Report = Callable[[], Awaitable[object]]


class SessionReporter:
    def __init__(self, rooms: RoomService, node_id: str = "") -> None:
        self.rooms = rooms
        self.node_id = node_id
        self._queue: asyncio.Queue[Report] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def joined(
        self,
        room: str,
        sid: str,
        identity: str,
        transport: Transport | str,
        *,
        role: str = "viewer",
        name: str = "",
        metadata: JsonObject | None = None,
        slot: int = -1,
    ) -> None:
        """A session started (WHIP publisher connected, WHEP/FLV/WS viewer joined)."""
        participant = ParticipantRecord(
            sid=sid, identity=identity, transport=Transport(transport), role=role, name=name,
            node=self.node_id, slot=slot, joined_at=time.time(), metadata=dict(metadata or {}),
        )
        self._queue.put_nowait(lambda: self.rooms.session_joined(room, participant))

    def left(self, room: str, sid: str) -> None:
        """A session ended, for any reason (safe to report twice or after a kick)."""
        self._queue.put_nowait(lambda: self.rooms.session_left(room, sid))

    def track_published(
        self, room: str, sid: str, track_sid: str, kind: str, codec: str = ""
    ) -> None:
        track = TrackRecord(sid=track_sid, kind=kind, codec=codec)
        self._queue.put_nowait(lambda: self.rooms.track_published(room, sid, track))

    def track_unpublished(self, room: str, sid: str, track_sid: str) -> None:
        self._queue.put_nowait(lambda: self.rooms.track_unpublished(room, sid, track_sid))

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def close(self) -> None:
        """Apply what is queued (sessions ended at shutdown), then stop."""
        if self._worker is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5.0)
        await stop_task(self._worker)

    async def drain(self) -> None:
        """Wait until every report so far has been applied."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            report = await self._queue.get()
            try:
                await report()
            except Exception:
                logger.exception("applying a session report failed")
            finally:
                self._queue.task_done()
