"""RoomService: rooms and participants as developers see them, over one Store and Bus.

Every change goes to the store first (atomically), then to the room's event stream and to
webhooks. Departures are reported by whichever caller's atomic removal succeeded, so a session
kicked over REST and then closed by the SFU is announced once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from signaling.bus import Bus
from signaling.errors import StoreUnavailable
from signaling.events import RoomEvent, Webhook
from signaling.live import cohosts
from signaling.live.schema import event
from signaling.media import MediaControl, NoMedia
from signaling.store import (
    JsonObject,
    ParticipantRecord,
    RoomNotFound,
    RoomRecord,
    Store,
    TrackRecord,
)
from signaling.webhooks import Webhooks

logger = logging.getLogger("shopcast.signaling.rooms")

VIEWERS_INTERVAL_S = 1.0  # at most one `viewers` count event per room per second
SWEEP_AFTER_S = 1.0  # a closed room is swept again after this (coalesced flushes are 250 ms)

class RoomService:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        webhooks: Webhooks,
        media: MediaControl | None = None,
        *,
        auto_create: bool = True,
        before_drop: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.webhooks = webhooks
        self._viewers_sent: dict[str, float] = {}
        self._viewers_pending: dict[str, asyncio.Task[None]] = {}
        self._sweeps: set[asyncio.Task[None]] = set()  # second passes over closed rooms
        self.media: MediaControl = media or NoMedia()
        self.auto_create = auto_create
        # once per closed room, before its data goes: what must outlive it is put aside
        # (each of its recordings' product timeline)
        self.before_drop = before_drop

    async def _event(self, name: str, kind: RoomEvent, **fields: Any) -> None:
        await self.bus.publish(name, {"type": kind.value, **fields})

    # --- rooms -----------------------------------------------------------------------------

    async def create(
        self, name: str, metadata: JsonObject | None = None, *, auto: bool = False
    ) -> tuple[RoomRecord, bool]:
        room, created = await self.store.create_room(name, metadata=metadata, auto=auto)
        if created:
            self.webhooks.emit(Webhook.ROOM_STARTED, room=room.to_json())
        return room, created

    async def state(self, room: RoomRecord) -> JsonObject:
        """A room's live state: counts by transport, publishers with tracks, node, last seq."""
        counts = await self.store.room_counts(room.name)
        participants = await self.store.list_participants(room.name)
        publishers = [p.to_json() for p in participants if p.tracks or p.role == "publisher"]
        return room.to_json() | {
            "live": any(p.tracks for p in participants),
            "publishers": publishers,
            "counts": counts.to_json(),
            "seq": await self.bus.last_seq(room.name),
        }

    async def summary(self, room: RoomRecord) -> JsonObject:
        """What a room list shows: the record and its counts."""
        counts = await self.store.room_counts(room.name)
        return room.to_json() | {"counts": counts.to_json()}

    async def update_metadata(self, name: str, metadata: JsonObject) -> RoomRecord | None:
        room = await self.store.set_room_metadata(name, metadata)
        if room is not None:
            await self._event(name, RoomEvent.ROOM_UPDATED, room=room.to_json())
        return room

    async def close(self, name: str) -> bool:
        """End every session (media first, so nobody keeps receiving), then drop the state."""
        if await self.store.get_room(name) is None:
            return False
        ended = await self.media.end_room(name)
        removed = await self.store.delete_room(name)
        if removed is None:
            return True  # its last session's departure (or another close) finished it first
        room, participants = removed
        await cohosts.clear(self.store, name)
        logger.info("room %s closed (%d sessions ended)", name, ended)
        for participant in participants:
            self._left_webhooks(room, participant)
        await self._event(name, RoomEvent.ROOM_CLOSED, room=room.to_json())
        self.webhooks.emit(Webhook.ROOM_FINISHED, room=room.to_json())
        await self._forget(name)
        return True

    async def _forget(self, name: str, *, sweep: bool = True) -> None:
        """Free what the closed room owned, after its ``room_closed`` went out: its scope in
        the store (commerce, moderation, chat, likes, gifts), its bus history (the seq is
        kept a while, see ``Bus.forget_room``) and this service's own per-room entries. A
        re-created room starts with none of it. A second pass SWEEP_AFTER_S later takes what
        in-flight work wrote after the close (a coalesced ``likes`` flush, a stock tick)."""
        pending = self._viewers_pending.pop(name, None)
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()
        self._viewers_sent.pop(name, None)
        if await self.store.get_room(name) is not None:
            return  # re-created meanwhile: what is there is the new room's
        if sweep and self.before_drop is not None:
            try:
                await self.before_drop(name)
            except Exception:  # what it keeps is lost; the room's data still goes
                logger.exception("putting aside what closed room %s leaves failed", name)
        await self.store.drop_room_data(name)
        await self.bus.forget_room(name)
        if sweep:
            task = asyncio.create_task(self._sweep_later(name))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)

    async def _sweep_later(self, name: str) -> None:
        await asyncio.sleep(SWEEP_AFTER_S)
        try:
            await self._forget(name, sweep=False)
        except Exception:  # a store outage: the keys' TTLs (bus) or the next close take them
            logger.exception("sweeping closed room %s failed", name)

    # --- participants ----------------------------------------------------------------------

    async def sessions_of(self, room: str, identity: str) -> list[ParticipantRecord]:
        return [p for p in await self.store.list_participants(room) if p.identity == identity]

    async def kick(self, room: str, identity: str) -> list[ParticipantRecord]:
        """End every session of ``identity`` in ``room``; return the sessions that were kicked.

        The store goes first: ending the media makes the SFU report the session as left,
        and whichever removal comes first announces the departure, so ours must be it for
        the reason to read ``kicked``."""
        kicked = []
        for session in await self.sessions_of(room, identity):
            if await self.session_left(room, session.sid, reason="kicked") is not None:
                kicked.append(session)
            await self.media.end_session(room, session.sid)
        await self.media.end_identity(room, identity)  # its HTTP-FLV responses: not sessions
        return kicked

    async def mute(
        self, room: str, identity: str, muted: bool, *, track_sid: str = "", kind: str = ""
    ) -> list[TrackRecord]:
        """Mute (or unmute) the identity's published tracks, all or those matching."""
        changed = []
        for session in await self.sessions_of(room, identity):
            for track in session.tracks:
                if (track_sid and track.sid != track_sid) or (kind and track.kind != kind):
                    continue
                await self.media.mute_track(room, session.sid, track.sid, muted)
                updated = await self.store.set_track_muted(room, session.sid, track.sid, muted)
                if updated is None:
                    continue
                changed.append(updated)
                await self._event(
                    room, RoomEvent.TRACK_MUTED, participant_sid=session.sid,
                    track=updated.to_json(),
                )
        return changed

    async def update_participant(
        self, room: str, identity: str, metadata: JsonObject
    ) -> list[ParticipantRecord]:
        updated = []
        for session in await self.sessions_of(room, identity):
            if await self.store.set_participant_metadata(room, session.sid, metadata):
                current = await self.store.get_participant(room, session.sid)
                if current is not None:
                    updated.append(current)
                    await self._event(
                        room, RoomEvent.PARTICIPANT_UPDATED, participant=current.to_json()
                    )
        return updated

    # --- what the media plane reports (through SessionReporter) ----------------------------

    async def session_joined(self, room: str, participant: ParticipantRecord) -> bool:
        """Record a new session, creating the room on the way when that is allowed."""
        for _ in range(3):  # the room may be closed between our create and our add
            if self.auto_create:
                await self.create(room, auto=True)
            try:
                added = await self.store.add_participant(room, participant)
            except RoomNotFound:
                if not self.auto_create:
                    return False
                continue
            if added:
                record = await self.store.get_room(room)
                self.webhooks.emit(
                    Webhook.PARTICIPANT_JOINED,
                    room=record.to_json() if record else {"name": room},
                    participant=participant.to_json(),
                )
                if participant.role != "viewer":  # see _viewers: viewers are a count
                    await self._event(room, RoomEvent.PARTICIPANT_JOINED,
                                      participant=participant.to_json())
                if participant.slot >= 0:
                    await self._stage_joined(room, participant)
                await self._viewers(room)
            return added
        return False

    async def session_left(
        self, room: str, sid: str, reason: str = "left"
    ) -> ParticipantRecord | None:
        participant = await self.store.remove_participant(room, sid)
        if participant is None:
            return None
        record = await self.store.get_room(room)
        if record is not None:
            self._left_webhooks(record, participant)
        if participant.role != "viewer":
            await self._event(room, RoomEvent.PARTICIPANT_LEFT,
                              participant=participant.to_json(), reason=reason)
        if participant.slot >= 0:
            await self._stage_left(room, participant)
        await self._viewers(room)
        if record is not None and record.auto:
            finished = await self.store.delete_room(room, if_empty=True)
            if finished is not None:
                await cohosts.clear(self.store, room)
                await self._event(room, RoomEvent.ROOM_CLOSED, room=finished[0].to_json())
                self.webhooks.emit(Webhook.ROOM_FINISHED, room=finished[0].to_json())
                await self._forget(room)
        return participant

    async def restore_session(self, room: str, participant: ParticipantRecord,
                              tracks: list[TrackRecord], *, owner: str = "") -> bool:
        """After Redis lost its data: record a session that never ended again, with its room
        (created as this service creates rooms for sessions), its tracks, its stage slot and,
        with ``owner``, the room's node. The join's events and webhooks went out when it
        joined and are not repeated; the viewer count is announced. Idempotent."""
        await self.store.create_room(room, auto=self.auto_create)
        try:
            added = await self.store.add_participant(room, participant)
        except RoomNotFound:
            return False  # closed meanwhile
        for track in tracks:
            await self.store.add_track(room, participant.sid, track)
        if participant.slot >= 0:
            await cohosts.stage_joined(self.store, room, participant.sid, participant.identity,
                                       participant.name, participant.slot)
        if owner:
            await self.store.claim_room_node(room, owner)
        await self._viewers(room)
        return added

    async def track_published(self, room: str, sid: str, track: TrackRecord) -> bool:
        if not await self.store.add_track(room, sid, track):
            return False
        await self._track_webhook(Webhook.TRACK_PUBLISHED, room, sid, track)
        await self._event(room, RoomEvent.TRACK_PUBLISHED, participant_sid=sid,
                          track=track.to_json())
        return True

    async def track_unpublished(self, room: str, sid: str, track_sid: str) -> bool:
        track = await self.store.remove_track(room, sid, track_sid)
        if track is None:
            return False
        await self._track_webhook(Webhook.TRACK_UNPUBLISHED, room, sid, track)
        await self._event(room, RoomEvent.TRACK_UNPUBLISHED, participant_sid=sid,
                          track=track.to_json())
        return True

    # --- helpers ---------------------------------------------------------------------------

    async def _stage_joined(self, room: str, participant: ParticipantRecord) -> None:
        """A publisher session: on the room's stage; a co-host's arrival is a ``cohost`` event."""
        await cohosts.stage_joined(self.store, room, participant.sid, participant.identity,
                                   participant.name, participant.slot)
        if participant.slot > 0:
            await self.bus.publish(room, event("cohost", identity=participant.identity,
                                               action="joined", slot=participant.slot))

    async def _stage_left(self, room: str, participant: ParticipantRecord) -> None:
        await cohosts.stage_left(self.store, room, participant.sid)
        if participant.slot > 0:
            await self.bus.publish(room, event("cohost", identity=participant.identity,
                                               action="left", slot=participant.slot))

    async def _viewers(self, room: str) -> None:
        """Announce the audience as a count, at most once per VIEWERS_INTERVAL_S per room.

        Room events reach every participant; an event per viewer joining would cost the square
        of the audience (500 joining viewers: 250,000 sends). Webhooks still fire per viewer.
        """
        if room in self._viewers_pending:
            return
        wait = self._viewers_sent.get(room, -VIEWERS_INTERVAL_S) + VIEWERS_INTERVAL_S
        wait -= time.monotonic()
        if wait <= 0:
            await self._send_viewers(room)
            return
        task = asyncio.create_task(self._send_viewers_later(room, wait))
        self._viewers_pending[room] = task

    async def _send_viewers_later(self, room: str, wait: float) -> None:
        await asyncio.sleep(wait)
        self._viewers_pending.pop(room, None)
        with contextlib.suppress(StoreUnavailable):  # the next join or leave announces it
            await self._send_viewers(room)

    async def _send_viewers(self, room: str) -> None:
        self._viewers_sent[room] = time.monotonic()
        counts = (await self.store.room_counts(room)).to_json()
        await self._event(room, RoomEvent.VIEWERS, count=counts["viewers"],
                          by_transport=counts["by_transport"])

    def _left_webhooks(self, room: RoomRecord, participant: ParticipantRecord) -> None:
        for track in participant.tracks:
            self.webhooks.emit(
                Webhook.TRACK_UNPUBLISHED, room=room.to_json(),
                participant=participant.to_json(), track=track.to_json(),
            )
        self.webhooks.emit(
            Webhook.PARTICIPANT_LEFT, room=room.to_json(), participant=participant.to_json()
        )

    async def _track_webhook(
        self, hook: Webhook, room: str, sid: str, track: TrackRecord
    ) -> None:
        if not self.webhooks.enabled:
            return
        record = await self.store.get_room(room)
        participant = await self.store.get_participant(room, sid)
        payload: dict[str, Mapping[str, Any]] = {
            "room": record.to_json() if record else {"name": room},
            "participant": participant.to_json() if participant else {"sid": sid},
            "track": track.to_json(),
        }
        self.webhooks.emit(hook, **payload)
