"""Keeps one FLV output per live room, following the node's publishers (a RoomObserver).

Every live room gets its output when its anchor connects, not when the first FLV reader
arrives: the GOP cache is then already warm and a joiner starts at once. Co-hosts coming and
going change what the output mixes in (``RoomFlvOutput.set_cohosts``), never the output itself.
"""

from __future__ import annotations

import logging

from aiohttp import web

from sfu.flv.output import RoomFlvOutput
from sfu.room import Room
from sfu.session import PublisherSession
from sfu.settings import FlvSettings

logger = logging.getLogger("shopcast.sfu.flv")


class FlvManager:
    """Room name -> FLV output; one of ``SfuNode.room_observers``."""

    def __init__(self, settings: FlvSettings | None = None) -> None:
        self.settings = settings or FlvSettings()
        self.outputs: dict[str, RoomFlvOutput] = {}

    def publisher_live(self, room: Room, publisher: PublisherSession) -> None:
        if publisher.slot != 0:
            self._cohosts_changed(room)  # co-hosts reach FLV viewers through the mix
            return
        producers = [p for p in publisher.producers if not p.closed]
        if not producers:
            return
        old = self.outputs.pop(room.name, None)
        if old is not None:
            old.close()
        self.outputs[room.name] = RoomFlvOutput(room.name, producers, self.settings,
                                                feed=publisher.flv_feed)
        logger.info("FLV output up room=%s publisher=%s", room.name, publisher.id)
        self._cohosts_changed(room)

    def publisher_left(self, room: Room, publisher: PublisherSession) -> None:
        output = self.outputs.get(room.name)
        if output is not None and output.publisher_id == publisher.id:
            del self.outputs[room.name]
            output.close()
            logger.info("FLV output down room=%s", room.name)
        elif publisher.slot != 0:
            self._cohosts_changed(room)

    def _cohosts_changed(self, room: Room) -> None:
        output = self.outputs.get(room.name)
        if output is None:
            return
        output.set_cohosts({
            p.slot: [producer for producer in p.producers if not producer.closed]
            for p in room.publishers.values()
            if p.slot != 0 and p.live and not p.closed
        })

    def close(self) -> None:
        for output in self.outputs.values():
            output.close()
        self.outputs.clear()


FLV_KEY = web.AppKey("flv_manager", FlvManager)
