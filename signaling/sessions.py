"""SessionReporter: how the media plane tells the control plane about sessions and tracks.

The SFU's callbacks are synchronous and sit near the media path, so every method here only
enqueues; one task applies the reports in order (a session's join before its tracks, its
tracks before its leave), so store, events and webhooks never run on the SFU's time. A report
that meets a Redis outage waits and is applied again, so none is lost to it.

The reporter also remembers the sessions it reported and has not seen end, with their tracks:
after Redis lost its data, ``restore`` records them (and their rooms) again, through the same
queue, so a restore never overtakes a join or a leave reported before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from common.tasks import stop_task
from signaling.errors import StoreUnavailable
from signaling.rooms import RoomService
from signaling.store import JsonObject, ParticipantRecord, TrackRecord, Transport

logger = logging.getLogger("shopcast.signaling.sessions")

Report = Callable[[], Awaitable[object]]
RETRY_S = 0.5  # a report that met a Redis outage is applied again after this


class SessionReporter:
    def __init__(self, rooms: RoomService, node_id: str = "") -> None:
        self.rooms = rooms
        self.node_id = node_id
        # a node of a multi-node deployment owns its rooms in the registry: a restore claims
        # them back for it (``shopcast serve`` records no owner)
        self.claims_rooms = False
        self._queue: asyncio.Queue[Report] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        # (room, sid) -> the session and its tracks by sid, while it lives
        self._live: dict[tuple[str, str], tuple[ParticipantRecord, dict[str, TrackRecord]]] = {}

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
        self._live[(room, sid)] = (participant, {})
        self._queue.put_nowait(lambda: self.rooms.session_joined(room, participant))

    def left(self, room: str, sid: str) -> None:
        """A session ended, for any reason (safe to report twice or after a kick)."""
        self._live.pop((room, sid), None)
        self._queue.put_nowait(lambda: self.rooms.session_left(room, sid))

    def track_published(
        self, room: str, sid: str, track_sid: str, kind: str, codec: str = ""
    ) -> None:
        track = TrackRecord(sid=track_sid, kind=kind, codec=codec)
        live = self._live.get((room, sid))
        if live is not None:
            live[1][track_sid] = track
        self._queue.put_nowait(lambda: self.rooms.track_published(room, sid, track))

    def track_unpublished(self, room: str, sid: str, track_sid: str) -> None:
        live = self._live.get((room, sid))
        if live is not None:
            live[1].pop(track_sid, None)
        self._queue.put_nowait(lambda: self.rooms.track_unpublished(room, sid, track_sid))

    @property
    def live_sessions(self) -> int:
        return len(self._live)

    async def restore(self) -> None:
        """Record every live session of this process again (Redis lost them), and wait until
        that is done. A session kicked meanwhile has left ``_live`` by then."""
        sessions = [(room, participant, list(tracks.values()))
                    for (room, _), (participant, tracks) in self._live.items()]
        owner = self.node_id if self.claims_rooms else ""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def report() -> None:
            try:
                for room, participant, tracks in sessions:
                    await self.rooms.restore_session(room, participant, tracks, owner=owner)
            except StoreUnavailable:
                raise  # applied again by _work once Redis answers
            except BaseException as exc:
                done.set_exception(exc)
                raise
            done.set_result(None)

        self._queue.put_nowait(report)
        await done

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
                while True:
                    try:
                        await report()
                        break
                    except StoreUnavailable:  # Redis away: the same report again, in order
                        await asyncio.sleep(RETRY_S)
            except Exception:
                logger.exception("applying a session report failed")
            finally:
                self._queue.task_done()
