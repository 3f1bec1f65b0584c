"""The ``events`` data channel of one participant: msgpack maps in and out.

Every WebRTC participant (anchor, co-host, viewer) may open one channel labelled ``events``.
Messages from the client are capped and handed on as bytes; messages to the client are sent
only while the channel is open and not backed up, so a stuck client never holds up a room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiortc import RTCDataChannel

from signaling.live.schema import MAX_EVENT_BYTES, packed_error

logger = logging.getLogger("shopcast.sfu.events")

LABEL = "events"
MAX_BUFFERED = 512 * 1024  # bytes queued in SCTP for one client before we drop its events


class EventsChannel:
    """Wraps one RTCDataChannel: validates what arrives, drops what a slow client can't take."""

    def __init__(self, channel: RTCDataChannel, on_message: Callable[[bytes], None]) -> None:
        self.channel = channel
        self.dropped = 0
        self._on_message = on_message
        channel.on("message", self._receive)

    @property
    def open(self) -> bool:
        return self.channel.readyState == "open"

    def send(self, packed: bytes) -> None:
        if not self.open:
            return
        if self.channel.bufferedAmount > MAX_BUFFERED:
            self.dropped += 1  # a reconnect with its last seq recovers what it missed
            return
        try:
            self.channel.send(packed)
        except Exception as exc:  # closing transport, message over the peer's limit
            logger.debug("events send failed: %s", exc)

    def _receive(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self.send(packed_error("bad_message", "events are binary msgpack maps"))
        elif len(message) > MAX_EVENT_BYTES:
            self.send(packed_error("too_large", f"events are at most {MAX_EVENT_BYTES} bytes"))
        else:
            self._on_message(message)
