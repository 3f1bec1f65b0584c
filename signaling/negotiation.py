"""What WebSocket signaling asks of the media plane: offer/answer for a publish or a play, and
ending a leg. The SFU implements it (``sfu/ws_negotiator.py``); signaling never imports sfu.

A room lives on one node. A negotiator that is not on the room's node raises ``Elsewhere``
with that node's base URL, and the client opens ``/ws`` there (the socket's 307).
"""

from __future__ import annotations

from typing import Protocol

from signaling.claims import Claims

MAX_SDP_BYTES = 64 * 1024
"""The largest SDP offer any door takes (WHIP, WHEP and their ``/ws`` twins)."""


class Elsewhere(Exception):
    """The room is served by another node: negotiate at ``url`` (its base URL)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url.rstrip("/")


class Negotiator(Protocol):
    async def publish(self, room: str, claims: Claims, offer_sdp: str,
                      address: str | None = None) -> tuple[str, str]:
        """Start a publisher leg (WHIP's rules: grants, co-host invitation, codecs, the node's
        session limits, which count the client's ``address``); return (leg id, answer SDP).
        Raises ``ApiError`` (refused) or ``Elsewhere``."""
        ...

    async def play(self, room: str, claims: Claims, offer_sdp: str,
                   address: str | None = None) -> tuple[str, str]:
        """Start a viewer leg (WHEP's rules); return (leg id, answer SDP)."""
        ...

    async def close(self, room: str, leg: str) -> bool:
        """End a leg this negotiator started; False if it is already gone."""
        ...
