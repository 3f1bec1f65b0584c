"""Multi-node routing: which SFU node serves a room, and how a request for a room that lives
elsewhere is sent there (``redirect``; the signaling process's HTTP front door, which forwards
WHIP/WHEP instead, is ``signaling/front_door.py``).

A room is assigned on its first publish (``RoomRouter.owner``: the least-loaded live node that
is not draining, claimed atomically) and stays on that node while it lives. Viewers never
assign: a room without a live owner is simply not live. When an owner dies its sessions are
gone with it, so ``RoomPlacement.forget_node`` reports them as left (reason ``node_failed``)
and clears the claim; ``NodeReaper`` does that for every room once a second, and ``assign``
does it on the spot, so a re-publish never waits for the reaper.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from common.tasks import stop_task
from signaling.errors import ApiError, not_found
from signaling.negotiation import Elsewhere
from signaling.nodes import NoNodeAvailable, RoomRouter
from signaling.room_names import require_room_name
from signaling.rooms import RoomService
from signaling.store import NodeRecord, RoomRecord, Store
from signaling.store.outage import every
from signaling.tokens import Claims

logger = logging.getLogger("shopcast.signaling.routing")

REAP_INTERVAL_S = 1.0
RETRY_AFTER_S = 2


class RoomPlacement:
    """Room -> node decisions over the store, shared by signaling processes and SFU nodes."""

    def __init__(self, store: Store, rooms: RoomService) -> None:
        self.store = store
        self.rooms = rooms
        self.router = RoomRouter(store, auto_create=rooms.auto_create)

    async def nodes(self) -> dict[str, NodeRecord]:
        return {n.id: n for n in await self.store.list_nodes()}

    async def live_owner(self, room: str) -> NodeRecord | None:
        """The live node serving ``room``, or None (no such room, never published, or its
        node died). Never assigns: only a publisher brings a room to a node."""
        record = await self.store.get_room(room)
        if record is None or not record.node:
            return None
        return (await self.nodes()).get(record.node)

    async def assign(self, room: str) -> NodeRecord:
        """The node a publisher of ``room`` must use, assigning one when the room has none,
        its owner died, or its owner is draining and holds none of the room's sessions (a
        room created over REST outlives its sessions; a drained node takes no new ones)."""
        await self._free_if_gone(room)
        return await self.router.owner(room)

    async def claim(self, room: str, node_id: str) -> str:
        """For a publisher that cannot be redirected (RTMP): ``room`` is placed on ``node_id``,
        where the publish landed, unless a live node already owns it. Returns the owner's id."""
        record = await self._free_if_gone(room)
        if record is None:
            if not self.rooms.auto_create:
                raise not_found(f"room {room!r} does not exist", "room_not_found")
            await self.store.create_room(room, auto=True)
        return await self.store.claim_room_node(room, node_id)

    async def _free_if_gone(self, room: str) -> RoomRecord | None:
        """Release ``room`` from an owner that died, or that drains and holds none of its
        sessions (a room created over REST outlives its sessions; a drained node takes no new
        ones). Returns the room's record."""
        record = await self.store.get_room(room)
        if record is not None and record.node:
            owner = (await self.nodes()).get(record.node)
            if owner is None:
                await self.forget_node(room, record.node)
            elif owner.draining and not await self._sessions_on(room, owner.id):
                await self.store.release_room_node(room, owner.id)
        return record

    async def forget_node(self, room: str, node_id: str) -> int:
        """``node_id`` is dead: its sessions in ``room`` left, and the room is free to claim."""
        gone = 0
        for participant in await self.store.list_participants(room):
            if participant.node == node_id:
                if await self.rooms.session_left(room, participant.sid, reason="node_failed"):
                    gone += 1
        await self.store.release_room_node(room, node_id)
        if gone:
            logger.warning("node %s is gone: %d sessions of room %s ended", node_id, gone, room)
        return gone

    async def _sessions_on(self, room: str, node_id: str) -> bool:
        return any(p.node == node_id for p in await self.store.list_participants(room))


class NodeReaper:
    """Once a second, frees the rooms of nodes that stopped heartbeating (see module doc).

    Every signaling process may run one: the store's removals are atomic, so each departure
    is still announced once."""

    def __init__(self, placement: RoomPlacement, interval_s: float = REAP_INTERVAL_S) -> None:
        self.placement = placement
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        await stop_task(self._task)

    async def reap(self) -> int:
        """One pass; returns how many rooms were freed."""
        alive = await self.placement.nodes()
        freed = 0
        for room in await self.placement.store.list_rooms():
            if room.node and room.node not in alive:
                await self.placement.forget_node(room.name, room.node)
                freed += 1
        return freed

    async def _run(self) -> None:
        await every(self.interval_s, self.reap, "reaping dead nodes")  # a pass catches up


class NodePlacement:
    """An SFU node's view: serve a room here, or name the node that should (the node's WHIP,
    WHEP and FLV handlers redirect too, so a stale or direct URL still ends up right)."""

    def __init__(self, placement: RoomPlacement, node_id: str) -> None:
        self.placement = placement
        self.node_id = node_id

    async def publish_elsewhere(self, room: str) -> str | None:
        try:
            owner = await self.placement.assign(room)
        except NoNodeAvailable as exc:
            raise ApiError(503, "no_node", str(exc)) from exc
        return None if owner.id == self.node_id else owner.url

    async def publish_here(self, room: str) -> str | None:
        """RTMP: serve ``room`` here (claiming it), or name the live node that owns it."""
        owner = await self.placement.claim(room, self.node_id)
        return None if owner == self.node_id else owner

    async def play_elsewhere(self, room: str) -> str | None:
        owner = await self.placement.live_owner(room)
        return None if owner is None or owner.id == self.node_id else owner.url


# --- elsewhere: the WebSocket front door and the redirect ---------------------------------------


class FrontDoorNegotiator:
    """WebSocket signaling on a signaling process (``signaling/ws_signaling.py``): it has no
    media, so a publish assigns the room and a play finds its node; both answer ``Elsewhere``
    (the socket's ``redirect``), like WHIP/WHEP's 307."""

    def __init__(self, placement: RoomPlacement) -> None:
        self.placement = placement

    async def publish(self, room: str, claims: Claims, offer_sdp: str,
                      address: str | None = None) -> tuple[str, str]:
        require_room_name(room)
        claims.require_media(True, room)
        try:
            owner = await self.placement.assign(room)
        except NoNodeAvailable as exc:
            raise ApiError(503, "no_node", str(exc)) from exc
        raise Elsewhere(owner.url)

    async def play(self, room: str, claims: Claims, offer_sdp: str,
                   address: str | None = None) -> tuple[str, str]:
        claims.require_media(False, room)
        owner = await self.placement.live_owner(room)
        if owner is None:
            raise not_found(f"room {room!r} is not live", "not_live")
        raise Elsewhere(owner.url)

    async def close(self, room: str, leg: str) -> bool:
        return False  # legs live on nodes; this process never made one


def redirect(base_url: str, request: web.Request) -> web.Response:
    """``307`` keeps the method and body; the query (an FLV ``?token=``) goes along."""
    return web.Response(
        status=307,
        headers={"Location": base_url.rstrip("/") + request.path_qs, "Cache-Control": "no-store"},
    )
