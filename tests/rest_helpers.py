"""Helpers for the REST tests: a tiny JSON client, a recording MediaControl, session reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from signaling.service import SIGNALING_KEY, Signaling


def forge_token(secret: str, room: str, identity: str, *grants: str, ttl: int = 3600) -> str:
    """A token signed with the right key that ``mint`` refuses to make (a non-admin token for
    room ``*``), as a client with a key of its own could sign one."""
    now = int(time.time())
    claims = {"sub": identity, "room": room, "grants": list(grants), "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Api:
    """JSON calls against ``base`` (the server URL) with an optional bearer token."""

    base: str
    token: str = ""

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = dict(headers or {})
        bearer = self.token if token is None else token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        async with aiohttp.ClientSession() as http, http.request(
            method, self.base + path, json=body, headers=sent
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)


@dataclass
class RecordingMedia:
    """A MediaControl that records what the control plane asked for."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    identities_ended: list[tuple[str, str]] = field(default_factory=list)  # (room, identity)

    async def end_room(self, room: str) -> int:
        self.calls.append(("end_room", room))
        return 0

    async def end_session(self, room: str, sid: str) -> bool:
        self.calls.append(("end_session", room, sid))
        return True

    async def end_identity(self, room: str, identity: str) -> int:
        self.identities_ended.append((room, identity))
        return 0

    async def mute_track(self, room: str, sid: str, track_sid: str, muted: bool) -> bool:
        self.calls.append(("mute_track", room, sid, track_sid, muted))
        return True


def signaling_of(server: Any) -> Signaling:
    return server.app[SIGNALING_KEY]


async def join(
    signaling: Signaling, room: str, sid: str, identity: str, transport: str = "whep",
    tracks: tuple[str, ...] = (),
) -> None:
    """Report a session (and its tracks) as the SFU would, and wait until it is applied."""
    role = "publisher" if transport == "whip" else "viewer"
    signaling.reporter.joined(room, sid, identity, transport, role=role)
    for kind in tracks:
        signaling.reporter.track_published(room, sid, f"TR_{sid}_{kind}", kind, "H264")
    await signaling.reporter.drain()
