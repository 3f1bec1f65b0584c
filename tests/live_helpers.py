"""Helpers for the live (chat and commerce) tests: a gateway on the test backends, claims,
packing, and a small msgpack WebSocket client for /ws/events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgpack

from signaling.bus import Bus
from signaling.live.gateway import EventGateway
from signaling.store import Store
from signaling.tokens import Claims, Grant
from signaling.webhooks import Webhooks, WebhookSettings


def claims(identity: str, *grants: Grant, room: str = "r", name: str = "") -> Claims:
    return Claims(identity=identity, room=room, grants=frozenset(grants or (Grant.SUBSCRIBE,)),
                  name=name)


VIEWER = claims("viewer", Grant.SUBSCRIBE, Grant.CHAT)
ADMIN = claims("anchor", Grant.ADMIN)


def pack(data: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
    return data


@dataclass
class Kicks:
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def __call__(self, room: str, identity: str) -> None:
        self.calls.append((room, identity))


def make_gateway(store: Store, bus: Bus, kicks: Kicks | None = None) -> EventGateway:
    return EventGateway(store, bus, Webhooks(WebhookSettings()), kick=kicks or Kicks())


async def send(gateway: EventGateway, who: Claims, room: str = "r", **message: Any
               ) -> list[dict[str, Any]]:
    """Handle one client message; return the decoded replies."""
    return [unpack(r) for r in await gateway.handle(room, who, pack(message))]


@dataclass
class WsClient:
    """A /ws/events client that records every decoded message."""

    ws: aiohttp.ClientWebSocketResponse
    http: aiohttp.ClientSession
    received: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    async def open(cls, base: str, room: str, token: str, after_seq: int | None = None,
                   epoch: str = "") -> WsClient:
        http = aiohttp.ClientSession()
        url = f"{base}/ws/events/{room}?token={token}"
        if after_seq is not None:
            url += f"&after_seq={after_seq}"
        if epoch:
            url += f"&epoch={epoch}"
        try:
            ws = await http.ws_connect(url)
        except BaseException:
            await http.close()
            raise
        return cls(ws, http)

    async def next(self, wait_s: float = 5.0) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.receive(), wait_s)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"expected a binary frame, got {message.type}: {message.data}")
        data = unpack(message.data)
        self.received.append(data)
        return data

    async def until(self, kind: str, wait_s: float = 5.0) -> dict[str, Any]:
        while True:
            data = await self.next(wait_s)
            if data["type"] == kind:
                return data

    async def send(self, **message: Any) -> None:
        await self.ws.send_bytes(pack(message))

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()
