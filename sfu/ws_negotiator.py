"""The node's side of WebSocket signaling (``signaling/ws_signaling.py``): WHIP's and WHEP's
offer/answer with the same rules, reached over the socket instead of HTTP.

This is the ``/ws`` door's adapter: a ``MediaError`` leaves it as the ``ApiError`` WHIP/WHEP
would answer (``sfu/http_errors.py``), whose code and message the socket sends back."""

from __future__ import annotations

from sfu.errors import MediaError, require_room_name
from sfu.http_errors import api_error
from sfu.media_control import NodeMediaControl
from sfu.node import SfuNode
from sfu.offer import Offer, max_sections, parse_offer
from sfu.whip_whep import Placement
from signaling.claims import Claims
from signaling.negotiation import Elsewhere


def _check(room: str, claims: Claims, publish: bool) -> None:
    require_room_name(room)
    claims.require_media(publish, room)


class NodeNegotiator:
    """A ``Negotiator`` over this node; with a ``Placement`` (``shopcast sfu``), a room served by
    another node raises ``Elsewhere`` with that node's URL."""

    def __init__(self, node: SfuNode, placement: Placement | None = None) -> None:
        self.node = node
        self.placement = placement

    async def publish(self, room: str, claims: Claims, offer_sdp: str,
                      address: str | None = None) -> tuple[str, str]:
        """``address``: the socket's client address, for the node's session limits."""
        try:
            return await self._publish(room, claims, offer_sdp, address)
        except MediaError as exc:
            raise api_error(exc) from exc

    async def play(self, room: str, claims: Claims, offer_sdp: str,
                   address: str | None = None) -> tuple[str, str]:
        try:
            return await self._play(room, claims, offer_sdp, address)
        except MediaError as exc:
            raise api_error(exc) from exc

    def _offer(self, offer_sdp: str, want: str) -> Offer:
        return parse_offer(offer_sdp, want=want,
                           section_limit=max_sections(self.node.settings.max_publishers, want))

    async def _publish(self, room: str, claims: Claims, offer_sdp: str,
                       address: str | None) -> tuple[str, str]:
        _check(room, claims, publish=True)
        await self.node.refuse_forbidden(room)
        if self.placement is not None and (url := await self.placement.publish_elsewhere(room)):
            raise Elsewhere(url)
        leg, answer = await self.node.publish(room, claims.identity,
                                              self._offer(offer_sdp, "send"), claims,
                                              address=address)
        return leg.id, answer

    async def _play(self, room: str, claims: Claims, offer_sdp: str,
                    address: str | None) -> tuple[str, str]:
        _check(room, claims, publish=False)
        await self.node.refuse_forbidden(room)
        local = self.node.rooms.get(room)
        if self.placement is not None and (local is None or not local.live) and (
            url := await self.placement.play_elsewhere(room)
        ):
            raise Elsewhere(url)
        leg, answer = await self.node.play(room, claims.identity,
                                           self._offer(offer_sdp, "recv"), claims,
                                           address=address)
        return leg.id, answer

    async def close(self, room: str, leg: str) -> bool:
        return await NodeMediaControl(self.node).end_session(room, leg)
