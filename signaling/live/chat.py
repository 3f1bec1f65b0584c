"""Chat (danmaku): length limit, per-user rate limit, history for joiners, delete.

A message is published on the room's bus (which gives it its ``seq``) and kept in the room's
``chat`` hash under its id, so a moderator's delete also removes it from what late joiners get,
and history is chat only (likes and stock events never push messages out of it). The hash is
trimmed to the newest ``CHAT_HISTORY`` now and then; a joiner gets at most the last 50.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from signaling.bus.base import unpack
from signaling.live.errors import LiveError
from signaling.live.moderation import Moderation
from signaling.live.schema import MAX_CHAT_CHARS, event
from signaling.live.timeline import RoomPublisher
from signaling.store import Store
from signaling.tokens import Claims, Grant

CHAT_HISTORY = 50
TRIM_EVERY = 10  # trim the hash on every 10th message (by seq)
RATE_LIMIT = 5  # messages per identity per window
RATE_WINDOW_MS = 5000


class Chat:
    def __init__(self, store: Store, bus: RoomPublisher, moderation: Moderation) -> None:
        self.store = store
        self.bus = bus
        self.moderation = moderation

    async def send(self, room: str, claims: Claims, text: str) -> dict[str, Any]:
        """Publish a message from ``claims``; admins (the anchor) are not rate limited."""
        text = text.strip()
        if not text or len(text) > MAX_CHAT_CHARS:
            raise LiveError("invalid", f"chat is 1-{MAX_CHAT_CHARS} characters", 400)
        await self.moderation.check_chat(room, claims.identity, text)
        if Grant.ADMIN not in claims.grants:
            sent = await self.store.incr(
                room, "rate:chat:" + claims.identity, ttl_ms=RATE_WINDOW_MS
            )
            if sent > RATE_LIMIT:
                raise LiveError("rate_limited", f"at most {RATE_LIMIT} messages per "
                                f"{RATE_WINDOW_MS // 1000} s", 429)
        message = event(
            "chat", id=uuid.uuid4().hex[:12], identity=claims.identity,
            name=claims.name or claims.identity, text=text, ts=int(time.time() * 1000),
        )
        published = await self.bus.publish(room, message)
        await self.store.hset(room, "chat", message["id"], published.packed)
        if published.seq % TRIM_EVERY == 0:
            await self._trim(room)
        return dict(published.data)

    async def delete(self, room: str, message_id: str) -> None:
        if not await self.store.hdel(room, "chat", message_id):
            raise LiveError("not_found", f"no chat message {message_id!r} in history", 404)
        await self.bus.publish(room, event("chat_deleted", id=message_id))

    async def history(self, room: str, up_to_seq: int = 0) -> list[dict[str, Any]]:
        """The last ``CHAT_HISTORY`` messages, oldest first (only seq <= ``up_to_seq`` if set)."""
        kept = [unpack(raw) for raw in (await self.store.hgetall(room, "chat")).values()]
        if up_to_seq:
            kept = [m for m in kept if int(m.get("seq", 0)) <= up_to_seq]
        kept.sort(key=lambda m: int(m.get("seq", 0)))
        return kept[-CHAT_HISTORY:]

    async def _trim(self, room: str) -> None:
        kept = sorted(
            ((int(unpack(raw).get("seq", 0)), mid)
             for mid, raw in (await self.store.hgetall(room, "chat")).items())
        )
        for _seq, mid in kept[:-CHAT_HISTORY]:
            await self.store.hdel(room, "chat", mid)
