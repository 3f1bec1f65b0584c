"""Moderation: mute, ban (kick + refuse rejoin), and the room's chat keyword filter.

State lives in the store (any process may be asked "is this identity banned?" by the SFU or
the WebSocket endpoint), as plain keys scoped to the room: ``ban:<identity>``,
``mute:<identity>`` (with a TTL for timed mutes) and ``filter`` (a JSON list of words).
A ban is announced as a ``kicked`` event, so every transport (data channel, WebSocket)
disconnects that identity's clients wherever they are, and the SFU ends its media sessions.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from signaling.bus import Bus
from signaling.live.errors import LiveError
from signaling.live.schema import event
from signaling.store import Store

MAX_FILTER_WORDS = 200
Kick = Callable[[str, str], Awaitable[object]]  # (room, identity): end its media sessions


class Moderation:
    def __init__(self, store: Store, bus: Bus, kick: Kick) -> None:
        self.store = store
        self.bus = bus
        self.kick = kick

    async def is_banned(self, room: str, identity: str) -> bool:
        return await self.store.get(room, "ban:" + identity) is not None

    async def is_muted(self, room: str, identity: str) -> bool:
        return await self.store.get(room, "mute:" + identity) is not None

    async def mute(self, room: str, identity: str, muted: bool = True, duration_s: int = 0) -> None:
        if muted:
            await self.store.put(room, "mute:" + identity, b"1", ttl_ms=duration_s * 1000)
        else:
            await self.store.delete(room, "mute:" + identity)

    async def ban(self, room: str, identity: str, banned: bool = True) -> None:
        """Ban first, then kick: a client that reconnects in between is already refused."""
        if not banned:
            await self.store.delete(room, "ban:" + identity)
            return
        await self.store.put(room, "ban:" + identity, b"1")
        await self.bus.publish(room, event("kicked", identity=identity, reason="banned"))
        await self.kick(room, identity)

    async def set_filter(self, room: str, words: list[str]) -> list[str]:
        cleaned = sorted({w.strip().lower() for w in words if isinstance(w, str) and w.strip()})
        if len(cleaned) > MAX_FILTER_WORDS or any(len(w) > 64 for w in cleaned):
            raise LiveError("invalid", "at most 200 words of at most 64 characters", 400)
        await self.store.put(room, "filter", json.dumps(cleaned).encode())
        return cleaned

    async def words(self, room: str) -> list[str]:
        raw = await self.store.get(room, "filter")
        return list(json.loads(raw)) if raw else []

    async def check_chat(self, room: str, identity: str, text: str) -> None:
        """Raise the reason ``identity`` may not say ``text`` here, if there is one."""
        if await self.is_banned(room, identity):
            raise LiveError("banned", "you are banned from this room", 403)
        if await self.is_muted(room, identity):
            raise LiveError("muted", "you are muted in this room", 403)
        lowered = text.lower()
        if any(word in lowered for word in await self.words(room)):
            raise LiveError("blocked", "the message contains a blocked word", 400)
