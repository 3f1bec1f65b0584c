"""Multi-node building blocks: a node's heartbeat, and which node a room lives on.

An SFU node runs a ``NodeAgent`` that writes its load to the registry every second with a TTL
(4.5 s by default), so a node that stops is dead within the TTL and its rooms can be claimed by
another; after a Redis outage or data loss the next beat registers it again.
``RoomRouter.owner`` answers "which node serves this room?": the recorded owner while it
lives, else the least-loaded live node that is not draining and is under its viewer cap,
claimed atomically so two signaling processes routing the same new room agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace

from common.tasks import stop_tasks
from signaling.bus import Bus
from signaling.store import NodeRecord, RoomNotFound, Store
from signaling.store.outage import every

logger = logging.getLogger("shopcast.signaling.nodes")

HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TTL_MS = 4500  # < 5 s: a node that stops is dead within 5 s, even just after a beat
DRAIN_TOPIC = "nodes"  # bus topic: {"op": "drain", "node": id, "draining": bool}


class NoNodeAvailable(LookupError):
    """No live node can take a new room (none registered, all draining or full)."""


def load_score(node: NodeRecord) -> tuple[float, float, int]:
    """Lower is better: share of the viewer cap in use, then CPU, then raw viewers."""
    cap_share = node.viewers / node.max_viewers if node.max_viewers else 0.0
    return (cap_share, node.cpu, node.viewers + node.publishers)


def choose_node(nodes: list[NodeRecord]) -> NodeRecord:
    open_nodes = [
        n for n in nodes if not n.draining and (not n.max_viewers or n.viewers < n.max_viewers)
    ]
    if not open_nodes:
        raise NoNodeAvailable("no SFU node can take a new room")
    return min(open_nodes, key=lambda n: (load_score(n), n.id))


class NodeAgent:
    """Keeps one node's registry entry fresh; ``sample`` returns its current load.

    With a ``bus`` it also obeys drain commands for its id (sent by ``POST
    /api/v1/nodes/{id}/drain`` in any signaling process): ``draining`` goes into every
    heartbeat from then on, and one is written at once, so the routers stop placing new rooms
    here within a bus round trip while the rooms it has finish.
    """

    def __init__(
        self,
        store: Store,
        sample: Callable[[], NodeRecord],
        *,
        bus: Bus | None = None,
        interval_s: float = HEARTBEAT_INTERVAL_S,
        ttl_ms: int = HEARTBEAT_TTL_MS,
    ) -> None:
        self.store = store
        self.sample = sample
        self.bus = bus
        self.interval_s = interval_s
        self.ttl_ms = ttl_ms
        self.draining = False
        self._task: asyncio.Task[None] | None = None  # the heartbeat loop
        self._listener: asyncio.Task[None] | None = None  # drain commands
        self._node_id = ""

    def record(self) -> NodeRecord:
        record = self.sample()
        return replace(record, draining=True) if self.draining else record

    async def start(self) -> None:
        record = self.record()
        self._node_id = record.id
        if self.bus is not None:
            listening = asyncio.Event()
            self._listener = asyncio.create_task(self._listen(self.bus, listening))
            await listening.wait()
        await self.store.heartbeat(record, self.ttl_ms)  # registered before we serve
        self._task = asyncio.create_task(self._beat())

    async def close(self) -> None:
        await stop_tasks((self._task, self._listener))
        if self._node_id:
            await self.store.remove_node(self._node_id)  # a clean stop frees rooms at once

    async def _beat(self) -> None:
        """Through a Redis outage beats are skipped; the next one registers the node again."""
        await every(self.interval_s,
                    lambda: self.store.heartbeat(self.record(), self.ttl_ms), "heartbeat")

    async def _listen(self, bus: Bus, listening: asyncio.Event) -> None:
        async with bus.listen(DRAIN_TOPIC) as commands:
            listening.set()
            async for message in commands:
                data = message.data
                if data.get("op") != "drain" or data.get("node") != self._node_id:
                    continue
                self.draining = bool(data.get("draining", True))
                logger.info("node %s %s", self._node_id,
                            "draining: no new rooms" if self.draining else "open again")
                try:
                    await self.store.heartbeat(self.record(), self.ttl_ms)
                except Exception:
                    logger.exception("heartbeat after a drain command failed")


class RoomRouter:
    def __init__(self, store: Store, *, auto_create: bool = True) -> None:
        self.store = store
        self.auto_create = auto_create

    async def owner(self, room: str) -> NodeRecord:
        """The node serving ``room``, assigning one if it has none or its owner died."""
        nodes = {n.id: n for n in await self.store.list_nodes()}
        record = await self.store.get_room(room)
        if record is None:
            if not self.auto_create:
                raise RoomNotFound(room)
            record, _ = await self.store.create_room(room, auto=True)
        if record.node in nodes:
            return nodes[record.node]
        candidate = choose_node(list(nodes.values()))
        owner = await self.store.claim_room_node(room, candidate.id)
        if owner not in nodes:  # claimed by a node that registered after our listing
            nodes = {n.id: n for n in await self.store.list_nodes()}
        return nodes.get(owner, candidate)
