"""The in-memory Bus: asyncio fan-out inside one process, history in a bounded deque.

A closed room's history goes at once (one process: its subscribers got ``room_closed`` live);
its ``seq`` is kept in ``_retired`` until CLOSED_SEQ_TTL_S, pruned oldest first. The epoch is
the process's: its counters start again only when it does.
"""

from __future__ import annotations

import collections
import itertools
import time
import uuid
from collections.abc import Mapping
from typing import Any

from signaling.bus.base import CLOSED_SEQ_TTL_S, Bus, Event, check_event, pack, unpack


class MemoryBus(Bus):
    def __init__(self, history_size: int = 1000) -> None:
        super().__init__(history_size)
        self._seq: dict[str, int] = {}
        self._history: dict[str, collections.deque[Event]] = {}
        # closed rooms: name -> (last seq, expiry on the monotonic clock), in expiry order
        self._retired: collections.OrderedDict[str, tuple[int, float]] = (
            collections.OrderedDict()
        )
        self.retired_ttl_s: float = CLOSED_SEQ_TTL_S
        self.epoch = uuid.uuid4().hex[:12]

    def _prune(self) -> None:
        now = time.monotonic()
        while self._retired:
            room, (_, expires) = next(iter(self._retired.items()))
            if expires > now:
                return
            del self._retired[room]

    def _kept_seq(self, room: str) -> int:
        kept = self._retired.get(room)
        return 0 if kept is None or kept[1] <= time.monotonic() else kept[0]

    async def forget_room(self, room: str) -> None:
        self._prune()
        self._history.pop(room, None)
        seq = self._seq.pop(room, None)
        if seq is not None:
            self._retired.pop(room, None)  # re-inserted last: expiry order holds
            self._retired[room] = (seq, time.monotonic() + self.retired_ttl_s)

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        check_event(event)
        last = self._seq.get(room)
        if last is None:  # a new room, or a closed one that is back: its seq goes on
            last = self._kept_seq(room)
            self._retired.pop(room, None)
        seq = last + 1
        self._seq[room] = seq
        # a round trip through msgpack gives subscribers what Redis would: no shared objects
        stamped = Event(room, seq, {**unpack(pack(event)), "seq": seq}, self.epoch)
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
        seq = self._seq.get(room)
        return self._kept_seq(room) if seq is None else seq

    async def position(self, room: str) -> tuple[str, int]:
        return self.epoch, await self.last_seq(room)

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
