"""The in-memory Bus: asyncio fan-out inside one process, history in a bounded deque."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Mapping
from typing import Any

from signaling.bus.base import Bus, Event, check_event, pack, unpack


class MemoryBus(Bus):
    def __init__(self, history_size: int = 1000) -> None:
        super().__init__(history_size)
        self._seq: dict[str, int] = {}
        self._history: dict[str, collections.deque[Event]] = {}

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        check_event(event)
        seq = self._seq.get(room, 0) + 1
        self._seq[room] = seq
        # a round trip through msgpack gives subscribers what Redis would: no shared objects
        stamped = Event(room, seq, {**unpack(pack(event)), "seq": seq})
        history = self._history.get(room)
        if history is None:
            history = self._history[room] = collections.deque(maxlen=self.history_size)
        history.append(stamped)
        self.published += 1
        self._fan_out(room, stamped)
        return stamped

    async def history(self, room: str, after_seq: int = 0, limit: int = 0) -> list[Event]:
        kept = self._history.get(room)
        if not kept:
            return []
        start = max(0, after_seq - kept[0].seq + 1)  # seqs in the deque are contiguous
        stop = start + limit if limit > 0 else None
        return list(itertools.islice(kept, start, stop))

    async def last_seq(self, room: str) -> int:
        return self._seq.get(room, 0)

    async def notify(self, topic: str, message: Mapping[str, Any]) -> None:
        self._fan_out("\0" + topic, Event("", 0, unpack(pack(message))))

    async def _channel_opened(self, channel: str) -> None:
        pass

    async def _channel_closed(self, channel: str) -> None:
        pass

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
