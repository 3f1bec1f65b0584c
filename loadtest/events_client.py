"""The client side of a participant's ``events`` data channel (msgpack maps both ways)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
from aiortc import RTCDataChannel, RTCPeerConnection

MAX_KEPT = 100_000  # received events kept for inspection; bounded


class EventsClient:
    """Opens ``events`` before the offer (so it is negotiated) and records what arrives."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.channel: RTCDataChannel = pc.createDataChannel("events")
        self.received: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", self._receive)

    def _receive(self, message: bytes | str) -> None:
        if isinstance(message, bytes) and len(self.received) < MAX_KEPT:
            self.received.append(msgpack.unpackb(message, raw=False))
            self.arrivals.append(time.monotonic())

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(msgpack.packb(event))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e.get("type") == kind]
