"""The ``events`` data channel of one participant: msgpack maps in and out.

Every WebRTC participant (anchor, co-host, viewer) may open one channel labelled ``events``.
Messages from the client are capped and handed on as bytes; messages to the client are sent
only while the channel is open. A client that does not drain (its SCTP buffer past
``MAX_BUFFERED``) is closed, logged and counted rather than queued for without bound or fed
silently with gaps: the client sees the close and opens the channel again (or
``/ws/events``) with its last ``seq``, which recovers what it missed; a stuck client never
holds up a room.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCDataChannel

from signaling.live.schema import MAX_EVENT_BYTES, packed_error

logger = logging.getLogger("shopcast.sfu.events")

LABEL = "events"
MAX_BUFFERED = 1024 * 1024  # bytes queued in SCTP for one client before it is closed


@dataclass
class ChannelStats:
    """This process's count of ``events`` channels closed for not draining (for /metrics)."""

    slow_closed: int = 0


stats = ChannelStats()


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
            self._close_slow()
            return
        try:
            self.channel.send(packed)
        except Exception as exc:  # closing transport, message over the peer's limit
            logger.debug("events send failed: %s", exc)

    def _close_slow(self) -> None:
        """Past the bound: closed once (the send that found it so is dropped with it)."""
        self.dropped += 1
        stats.slow_closed += 1
        logger.warning("events channel closed: %d bytes not drained by the client (limit %d)",
                       self.channel.bufferedAmount, MAX_BUFFERED)
        self.channel.close()

    def _receive(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self.send(packed_error("bad_message", "events are binary msgpack maps"))
        elif len(message) > MAX_EVENT_BYTES:
            self.send(packed_error("too_large", f"events are at most {MAX_EVENT_BYTES} bytes"))
        else:
            self._on_message(message)
