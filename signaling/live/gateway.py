"""EventGateway: the one entry point for client events, whichever transport carries them.

The SFU's data-channel bridge and the ``/ws/events/{room}`` WebSocket both call exactly:

- ``handle(room, claims, raw, budget)``: validate one client message and act on it; return the
  packed replies for that client only (``error``, ``ack``, ``order``, resumed events). Everything
  others must see goes through the room's bus, which the transport delivers (``Event.packed``).
  ``budget`` is the connection's ``ResumeBudget`` (``resume_budget()``, one per connection):
  ``resume`` is bounded in rate and bytes per connection (``signaling/live/resume.py``).
- ``replay(room, after_seq, epoch)``: the packed events after ``after_seq`` within the resume
  caps, for a transport whose client (re)connects with its last ``seq`` (and its epoch: a seq
  of another epoch gets a fresh ``state``).
- ``snapshot(room)``: the packed ``state`` a joiner gets first; it reflects the room up to its
  ``seq``, and the transport then delivers bus events from ``seq + 1`` on.
- ``is_banned(room, identity)``: refuse a (re)joining banned identity.
- ``forbids``: the room's compliance forbid (``signaling/live/forbid.py``), which the media
  doors refuse with; ``state`` carries it, so a page joining a forbidden room shows why.
- ``qoe``: viewers' ``qoe`` reports (``signaling/live/qoe.py``), which ``handle`` takes without
  a reply or an event; ``/metrics`` and ``GET /rooms/{room}/health`` read them.

A refused message changes nothing and only its sender hears about it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from signaling.bus import Bus
from signaling.errors import StoreUnavailable
from signaling.live import schema
from signaling.live.catalog import Catalog
from signaling.live.chat import Chat
from signaling.live.cohosts import Cohosts, stage
from signaling.live.errors import LiveError
from signaling.live.forbid import EndPublishing, Forbids
from signaling.live.gifts import Gifts
from signaling.live.likes import RATE as LIKE_RATE
from signaling.live.likes import Likes
from signaling.live.media_time import MediaTimes
from signaling.live.moderation import Kick, Moderation
from signaling.live.qoe import QoeReports
from signaling.live.resume import ResumeBudget, ResumeLimits
from signaling.live.sales import Sales
from signaling.live.schema import LAYOUTS, EventError, EventSpec, event, pack
from signaling.live.timeline import Timeline
from signaling.store import Store
from signaling.tokens import Claims, Grant
from signaling.webhooks import Webhooks

logger = logging.getLogger("shopcast.signaling.live")

Reply = dict[str, Any]
Action = Callable[[str, Claims, dict[str, Any]], Awaitable[list[Reply]]]
RESUME_REASONS = ("rate", "size")  # resume_limited errors; fresh states past the caps
RECONNECT_BUDGETS = 10_000  # (room, identity) buckets of reconnects kept, oldest dropped


def allowed(claims: Claims, grant: Grant) -> bool:
    return grant in claims.grants or Grant.ADMIN in claims.grants


async def _no_kick(room: str, identity: str) -> None:
    return None


class EventGateway:
    def __init__(
        self, store: Store, bus: Bus, webhooks: Webhooks, kick: Kick = _no_kick,
        *, interval_ms: int = 250, layout: str = LAYOUTS[0],
        resume: ResumeLimits | None = None, like_rate: float = LIKE_RATE,
        end_publishing: EndPublishing | None = None, timeline_chat: bool = False,
    ) -> None:
        self.store = store
        self.bus = bus
        self.layout = layout
        self.moderation = Moderation(store, bus, kick)
        self.forbids = Forbids(store, bus, end_publishing)
        self.cohosts = Cohosts(store, bus, kick)
        # catalog, sales and chat publish through the timeline: it keeps commerce events
        self.timeline = Timeline(store, bus, chat=timeline_chat)
        # what viewers see on screen carries the anchor's media time, to show with its frame
        self.media_times = MediaTimes(store, self.timeline)
        self.chat = Chat(store, self.timeline, self.moderation)
        self.likes = Likes(store, bus, interval_ms, like_rate)
        self.gifts = Gifts(store, self.media_times)
        self.catalog = Catalog(store, self.media_times)
        self.sales = Sales(store, self.media_times, webhooks, self.catalog, interval_ms)
        self.qoe = QoeReports(store)  # viewers' reports: counted and aggregated, never published
        self.refused = 0  # client messages answered with an error
        self.resume_limits = resume or ResumeLimits()
        self.resume_limited = dict.fromkeys(RESUME_REASONS, 0)  # by reason, for /metrics
        self.resumed_bytes = 0  # events re-sent by resumes, packed
        self._reconnects: dict[tuple[str, str], ResumeBudget] = {}  # oldest use first
        self._actions: dict[str, Action] = {
            "chat": self._chat, "like": self._like, "gift": self._gift,
            "purchase": self._purchase, "pin": self._pin,
            "start_sale": self._start_sale, "delete_chat": self._delete_chat,
            "mute": self._mute, "ban": self._ban, "set_filter": self._set_filter,
            "cohost_invite": self._cohost_invite, "cohost_remove": self._cohost_remove,
            "cohost_accept": self._cohost_accept, "cohost_decline": self._cohost_decline,
        }
        missing = set(schema.CLIENT_EVENTS) ^ {*self._actions, "resume", "qoe"}
        assert not missing, f"client events without an action (or vice versa): {missing}"

    # --- the transport-facing API -----------------------------------------------------------

    async def handle(self, room: str, claims: Claims, raw: bytes,
                     budget: ResumeBudget | None = None) -> list[bytes]:
        """``budget``: the connection's; without one (tests, tools) each resume gets a fresh
        bucket, so only the per-resume caps hold."""
        cid = ""
        try:
            if not claims.covers(room):
                raise EventError("forbidden", f"token is for room {claims.room!r}")
            try:
                spec, data = schema.parse(raw)
            except EventError as exc:
                self.qoe.refused(raw, exc)  # a refused report is counted as one
                raise
            cid = str(data.get("cid", ""))
            self._authorize(spec, claims, cid)
            if spec.type == "resume":
                return await self._resume(room, data, budget or self.resume_budget(), cid)
            if spec.type == "qoe":  # no reply when taken: a report is not a conversation
                await self.qoe.take(room, claims.identity, data)
                return []
            replies = await self._actions[spec.type](room, claims, data)
        except EventError as exc:
            self.refused += 1
            return [schema.packed_error(exc.code, exc.message, exc.cid or cid)]
        except LiveError as exc:
            self.refused += 1
            return [schema.packed_error(exc.code, exc.message, cid)]
        except StoreUnavailable as exc:  # Redis away: logged once where it was met
            return [schema.packed_error(exc.code, exc.message, cid)]
        except Exception:  # a bug here must not take the client's connection down with it
            logger.exception("handling a client event failed in room %s", room)
            return [schema.packed_error("internal", "the server failed to handle that", cid)]
        return [pack(reply) for reply in replies]

    def resume_budget(self) -> ResumeBudget:
        """A new connection's bucket of resumes."""
        return ResumeBudget(self.resume_limits)

    def reconnect_wait(self, room: str, identity: str) -> float:
        """A socket that opens with ``after_seq`` is a resume no per-connection bucket sees
        yet, so reconnects share one bucket per room and identity: 0.0 when allowed, else the
        seconds to wait (the door refuses before it reads anything)."""
        key = (room, identity)
        budget = self._reconnects.pop(key, None) or self.resume_budget()
        self._reconnects[key] = budget
        if len(self._reconnects) > RECONNECT_BUDGETS:
            del self._reconnects[next(iter(self._reconnects))]
        wait_s = budget.take()
        if wait_s > 0:
            self.resume_limited["rate"] += 1
        return wait_s

    async def replay(self, room: str, after_seq: int, epoch: str = "") -> list[bytes] | None:
        """The room's events after ``after_seq``, packed as they were sent live, when history
        still holds them all and they fit the resume caps; None when a fresh ``state`` must do
        instead (too far back, over a cap, a seq from the future, or of an ``epoch`` that is
        not the room's any more). Past the event cap no history is read at all."""
        current, last = await self.bus.position(room)
        if epoch and current and epoch != current:
            return None  # the seq started again since: a fresh state
        if after_seq >= last:
            return [] if after_seq == last else None
        limits = self.resume_limits
        if last - after_seq > limits.max_events:
            self.resume_limited["size"] += 1
            return None
        missed = await self.bus.history(room, after_seq, limits.max_events)
        if not missed or missed[0].seq != after_seq + 1:
            return None
        packed, size = [], 0
        for e in missed:
            raw = e.packed
            size += len(raw)
            if size > limits.max_bytes:
                self.resume_limited["size"] += 1
                return None
            packed.append(raw)
        self.resumed_bytes += size
        return packed

    async def snapshot(self, room: str) -> bytes:
        return pack(await self.state(room))

    async def state(self, room: str) -> dict[str, Any]:
        """The ``state`` event: read ``seq`` first, so nothing it misses is older than it."""
        epoch, seq = await self.bus.position(room)
        pinned = await self.catalog.pinned(room)
        forbid = await self.forbids.get(room)
        return event(
            "state", seq=seq, epoch=epoch, pinned=pinned.to_json() if pinned else None,
            sale=await self.sales.current(room), likes=await self.likes.total(room),
            viewers=await self.viewer_count(room), leaderboard=await self.gifts.leaderboard(room),
            chat=await self.chat.history(room, seq), gifts=self.gifts.catalog(),
            server_ms=int(time.time() * 1000), publishers=await stage(self.store, room),
            cohosts=[i.to_json() for i in await self.cohosts.list(room)], layout=self.layout,
            forbid=forbid.to_json() if forbid is not None else None,
        )

    async def viewer_count(self, room: str) -> int:
        """The room's sessions with the viewer role (``RoomService`` broadcasts changes)."""
        return (await self.store.room_counts(room)).viewers

    async def is_banned(self, room: str, identity: str) -> bool:
        return await self.moderation.is_banned(room, identity)

    async def close(self) -> None:
        await self.likes.close()
        await self.sales.close()

    # --- actions ----------------------------------------------------------------------------

    def _authorize(self, spec: EventSpec, claims: Claims, cid: str) -> None:
        """Every client event names the grants that may send it (``schema.CLIENT_EVENTS``);
        an event that names none is refused to everyone but an admin rather than open to all."""
        if not any(allowed(claims, grant) for grant in spec.grants or (Grant.ADMIN,)):
            wanted = " or ".join(repr(g.value) for g in spec.grants or (Grant.ADMIN,))
            raise EventError("forbidden", f"{spec.type} needs the {wanted} grant", cid)

    @staticmethod
    def _ack(data: dict[str, Any], result: Any = None) -> list[Reply]:
        return [event("ack", re=data["type"], cid=data.get("cid"), result=result)]

    async def _chat(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        await self.chat.send(room, claims, data["text"])
        return []

    async def _like(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        self.likes.tap(room, int(data.get("count", 1)), claims.identity)
        return []

    async def _gift(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        await self.gifts.send(room, claims, data["gift"], int(data.get("count", 1)))
        return []

    async def _purchase(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        if await self.moderation.is_banned(room, claims.identity):  # before any stock moves
            raise LiveError("banned", "you are banned from this room", 403)
        key = str(data.get("key") or "ch-" + uuid.uuid4().hex)
        order, duplicate = await self.sales.purchase(
            room, claims.identity, data["sku"], int(data.get("qty", 1)), key
        )
        return [event("order", order=order, duplicate=duplicate, cid=data.get("cid"))]

    async def _resume(self, room: str, data: dict[str, Any], budget: ResumeBudget, cid: str
                      ) -> list[bytes]:
        """The missed events themselves, each as it was sent live (clients drop any seq they
        already have); a fresh ``state`` when history no longer reaches back that far or the
        events are over the caps; ``resume_limited`` past the connection's bucket, before any
        store call."""
        wait_s = budget.take()
        if wait_s > 0:
            self.resume_limited["rate"] += 1
            raise EventError("resume_limited",
                             f"too many resumes on this connection: retry in {wait_s:.1f} s", cid)
        after, epoch = int(data["after_seq"]), str(data.get("epoch", ""))
        missed = await self.replay(room, after, epoch)
        return missed if missed is not None else [await self.snapshot(room)]

    async def _pin(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        product = await self.catalog.pin(room, data.get("sku"))
        return self._ack(data, product.to_json() if product else None)

    async def _start_sale(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        sale = await self.sales.start(room, data["sku"], int(data["stock"]),
                                      int(data.get("per_user_limit", 0)), int(data["duration_s"]))
        return self._ack(data, sale)

    async def _delete_chat(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        await self.chat.delete(room, data["id"])
        return self._ack(data)

    async def _mute(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        await self.moderation.mute(room, data["identity"], bool(data.get("muted", True)),
                                   int(data.get("duration_s", 0)))
        return self._ack(data)

    async def _ban(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        await self.moderation.ban(room, data["identity"], bool(data.get("banned", True)))
        return self._ack(data)

    async def _set_filter(self, room: str, claims: Claims, data: dict[str, Any]) -> list[Reply]:
        return self._ack(data, await self.moderation.set_filter(room, list(data["words"])))

    async def _cohost_invite(self, room: str, claims: Claims, data: dict[str, Any]
                             ) -> list[Reply]:
        invitation = await self.cohosts.invite(room, data["identity"], claims.identity)
        return self._ack(data, invitation.to_json())

    async def _cohost_remove(self, room: str, claims: Claims, data: dict[str, Any]
                             ) -> list[Reply]:
        return self._ack(data, await self.cohosts.remove(room, data["identity"], claims.identity))

    async def _cohost_accept(self, room: str, claims: Claims, data: dict[str, Any]
                             ) -> list[Reply]:
        return self._ack(data, (await self.cohosts.accept(room, claims.identity)).to_json())

    async def _cohost_decline(self, room: str, claims: Claims, data: dict[str, Any]
                              ) -> list[Reply]:
        await self.cohosts.decline(room, claims.identity)
        return self._ack(data)
