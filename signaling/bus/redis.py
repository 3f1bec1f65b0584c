"""The Redis Bus: a room's ``seq`` is an INCR, its history a Stream (entry id ``<seq>-0``), its
fan-out a pub/sub channel; one Lua script does all three, so pub/sub order is ``seq`` order.
The room's epoch is a key beside its seq, written by the first publish that finds none (a new
room, or one whose seq Redis lost with it); the two keys live and expire together.

One pub/sub connection per process carries every room this process has subscribers in; a
reader task hands messages to local subscriptions. Messages are
``b"<seq>:<epoch>:" + msgpack``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from common.tasks import stop_task
from signaling.bus.base import (
    CLOSED_HISTORY_TTL_S,
    CLOSED_SEQ_TTL_S,
    Bus,
    Event,
    check_event,
    pack,
    unpack,
)
from signaling.store.outage import UNREACHABLE, Outage, guard
from signaling.store.redis import Keys

logger = logging.getLogger("shopcast.signaling.bus")

# The room's epoch (KEYS[4]) in ``epoch``, made from the server's clock (unique per room and
# reset) when there is none: whoever needs it first, a publish or a reader of the position.
EPOCH = """
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  local now = redis.call('TIME')
  epoch = now[1] .. string.format('%06d', tonumber(now[2]))
  redis.call('SET', KEYS[4], epoch)
end
"""

# KEYS: seq, stream, room hash, epoch; ARGV: payload, max history, channel, closed seq ttl
# ms, closed history ttl ms -> {seq, epoch}. A room that is not in the store (closed, or
# never created) keeps its seq, epoch and history only for the closed TTLs; a live room's are
# persistent.
PUBLISH = """
local seq = redis.call('INCR', KEYS[1])
""" + EPOCH + """
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[3], seq .. ':' .. epoch .. ':' .. ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[4])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
end
return {seq, epoch}
"""

# KEYS: seq, stream, room hash, epoch; ARGV: closed seq ttl ms -> {epoch, seq}. An epoch made
# here for a room that is not in the store expires like a closed room's.
POSITION = """
""" + EPOCH + """
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('PTTL', KEYS[4]) == -1 then
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
end
return {epoch, redis.call('GET', KEYS[1]) or '0'}
"""

# KEYS: seq, stream, room hash, epoch; ARGV: closed seq ttl ms, closed history ttl ms
FORGET = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[1])
return 1
"""

ANCHOR = "\0anchor"  # a channel we always hold, so the reader never runs out of subscriptions


@guard("_channel_opened")
class RedisBus(Bus):
    def __init__(self, client: Redis, prefix: str = "shopcast", history_size: int = 1000,
                 outage: Outage | None = None) -> None:
        super().__init__(history_size)
        self.client = client
        self.outage = outage or Outage()  # shared with the store on the same client
        self._r: Any = client
        self.keys = Keys(prefix)
        self._publish = client.register_script(PUBLISH)
        self._forget = client.register_script(FORGET)
        self._position = client.register_script(POSITION)
        self.closed_ttl_ms = (CLOSED_SEQ_TTL_S * 1000, CLOSED_HISTORY_TTL_S * 1000)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmed: dict[bytes, asyncio.Future[None]] = {}
        self._by_wire: dict[bytes, str] = {}

    def _wire(self, channel: str) -> str:
        if channel.startswith("\0"):
            return self.keys.topic(channel[1:])
        return self.keys.events(channel)

    async def start(self) -> None:
        self._pubsub = self.client.pubsub()
        await self._subscribe(ANCHOR)
        self._reader = asyncio.create_task(self._read())
        await self._confirmed_of(ANCHOR)

    async def close(self) -> None:
        await stop_task(self._reader)
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _subscribe(self, channel: str) -> None:
        wire = self._wire(channel).encode()
        self._by_wire[wire] = channel
        self._confirmed[wire] = asyncio.get_running_loop().create_future()
        assert self._pubsub is not None, "RedisBus.start() was not called"
        await self._pubsub.subscribe(wire)

    async def _confirmed_of(self, channel: str) -> None:
        future = self._confirmed.get(self._wire(channel).encode())
        if future is not None:
            await future

    async def _channel_opened(self, channel: str) -> None:
        """Subscribe and wait for Redis to confirm, so history read next cannot miss events."""
        await self._subscribe(channel)
        await self._confirmed_of(channel)

    async def _channel_closed(self, channel: str) -> None:
        wire = self._wire(channel).encode()
        self._by_wire.pop(wire, None)
        self._confirmed.pop(wire, None)
        if self._pubsub is not None:
            await self._pubsub.unsubscribe(wire)

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            try:
                async for message in self._pubsub.listen():
                    self.outage.answered()
                    self._handle(message)
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:  # redis-py reconnects and resubscribes on the next read
                self.outage.failed(exc)  # logged once per outage, not every retry
                await asyncio.sleep(0.5)
            except Exception:
                logger.exception("event bus reader failed; retrying")
                await asyncio.sleep(0.5)

    def _handle(self, message: dict[str, Any]) -> None:
        wire = message.get("channel")
        if not isinstance(wire, bytes):
            return
        if message["type"] == "subscribe":
            future = self._confirmed.get(wire)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if message["type"] != "message":
            return
        channel = self._by_wire.get(wire)
        if channel is None:
            return
        raw: bytes = message["data"]
        try:
            if channel.startswith("\0"):
                self._fan_out(channel, Event("", 0, unpack(raw)))
                return
            head, _, rest = raw.partition(b":")
            epoch, _, payload = rest.partition(b":")
            seq = int(head)
            self._fan_out(channel, Event(channel, seq, {**unpack(payload), "seq": seq},
                                         epoch.decode()))
        except (ValueError, TypeError):
            logger.warning("dropping a malformed bus message on %r", wire)

    async def publish(self, room: str, event: Mapping[str, Any]) -> Event:
        check_event(event)
        payload = pack({k: v for k, v in event.items() if k != "seq"})
        seq, epoch = await self._publish(
            keys=self._stream_keys(room),
            args=[payload, self.history_size, self.keys.events(room), *self.closed_ttl_ms],
        )
        self.published += 1
        return Event(room, int(seq), {**unpack(payload), "seq": int(seq)}, epoch.decode())

    def _stream_keys(self, room: str) -> list[str]:
        k = self.keys
        return [k.seq(room), k.events(room), k.room(room), k.stream_epoch(room)]

    async def history(self, room: str, after_seq: int = 0, limit: int = 0) -> list[Event]:
        """The kept events with the epoch they belong to: the stream and the epoch key are
        lost (or expire) together, so every entry is of the epoch read beside it."""
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.get(self.keys.stream_epoch(room))
            pipe.xrange(self.keys.events(room), min=f"{after_seq + 1}-0", max="+",
                        count=limit or None)
            raw_epoch, entries = await pipe.execute()
        epoch = raw_epoch.decode() if raw_epoch else ""
        events = []
        for entry_id, fields in entries:
            seq = int(entry_id.split(b"-")[0])
            events.append(Event(room, seq, {**unpack(fields[b"e"]), "seq": seq}, epoch))
        return events

    async def last_seq(self, room: str) -> int:
        value = await self._r.get(self.keys.seq(room))
        return int(value or 0)

    async def position(self, room: str) -> tuple[str, int]:
        """The epoch, made now if the room has none yet, so a ``state`` always names one."""
        epoch, seq = await self._position(keys=self._stream_keys(room),
                                          args=[self.closed_ttl_ms[0]])
        return epoch.decode(), int(seq)

    async def forget_room(self, room: str) -> None:
        """Expire the closed room's seq, epoch and history (nothing if it was re-created)."""
        await self._forget(keys=self._stream_keys(room), args=list(self.closed_ttl_ms))

    async def notify(self, topic: str, message: Mapping[str, Any]) -> None:
        await self._r.publish(self.keys.topic(topic), pack(message))
