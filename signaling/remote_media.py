"""MediaControl across processes: signaling publishes commands on the bus topic ``media``,
every SFU node applies them to the sessions it has.

A room lives on one node and a session on the node that recorded it, so a broadcast reaches
the one that matters; the others find nothing to do. Commands are fire-and-forget: the REST
call returns once the command is published, and the node's own session reports then update
the store. In a single process, give ``RoomService`` the SFU's MediaControl directly instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.tasks import stop_task
from signaling.bus import Bus
from signaling.media import MediaControl

logger = logging.getLogger("shopcast.signaling.remote_media")

TOPIC = "media"


class BusMediaControl:
    """The signaling side: a MediaControl that sends every command to all nodes."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def end_room(self, room: str) -> int:
        await self.bus.notify(TOPIC, {"op": "end_room", "room": room})
        return 0

    async def end_session(self, room: str, sid: str) -> bool:
        await self.bus.notify(TOPIC, {"op": "end_session", "room": room, "sid": sid})
        return True

    async def end_identity(self, room: str, identity: str) -> int:
        await self.bus.notify(TOPIC, {"op": "end_identity", "room": room, "identity": identity})
        return 0

    async def end_publishers(self, room: str) -> int:
        await self.bus.notify(TOPIC, {"op": "end_publishers", "room": room})
        return 0

    async def mute_track(self, room: str, sid: str, track_sid: str, muted: bool) -> bool:
        await self.bus.notify(TOPIC, {"op": "mute_track", "room": room, "sid": sid,
                                      "track_sid": track_sid, "muted": muted})
        return True


class MediaCommands:
    """The SFU side: applies commands from the bus to this node's MediaControl."""

    def __init__(self, bus: Bus, local: MediaControl) -> None:
        self.bus = bus
        self.local = local
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._ready.wait()

    async def close(self) -> None:
        await stop_task(self._task)

    async def _run(self) -> None:
        async with self.bus.listen(TOPIC) as commands:
            self._ready.set()
            async for message in commands:
                try:
                    await self._apply(dict(message.data))
                except Exception:
                    logger.exception("media command %r failed", message.data)

    async def _apply(self, command: dict[str, Any]) -> None:
        op = command.get("op")
        if op == "end_room":
            await self.local.end_room(str(command["room"]))
        elif op == "end_session":
            await self.local.end_session(str(command["room"]), str(command["sid"]))
        elif op == "end_identity":
            await self.local.end_identity(str(command["room"]), str(command["identity"]))
        elif op == "end_publishers":
            await self.local.end_publishers(str(command["room"]))
        elif op == "mute_track":
            await self.local.mute_track(str(command["room"]), str(command["sid"]),
                                        str(command["track_sid"]), bool(command["muted"]))
        else:
            logger.warning("unknown media command %r", command)
