"""Validation of the SDP offers that WHIP and WHEP clients send, before any state is created."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import sdp

from sfu.errors import BadOffer, OfferTooLarge, TooManySections
from sfu.layers import MAX_VIDEO_LAYERS
from signaling.negotiation import MAX_SDP_BYTES


@dataclass(frozen=True)
class OfferedCodec:
    name: str
    parameters: dict[str, object]


@dataclass(frozen=True)
class OfferedMedia:
    kind: str
    direction: str
    offered: list[OfferedCodec]

    @property
    def codecs(self) -> list[str]:
        return [c.name for c in self.offered]


@dataclass(frozen=True)
class Offer:
    sdp: str
    media: list[OfferedMedia]

    def kinds(self) -> list[str]:
        return [m.kind for m in self.media if m.kind in ("audio", "video")]


def max_sections(max_publishers: int, want: str = "recv") -> int:
    """The media sections a room's offer may carry: audio and video per publisher slot (what a
    viewer negotiates), plus the ``events`` data channel. A publisher's offer (``want`` is
    ``"send"``) may instead carry audio, its video layers (``sfu/layers.py``) and the channel."""
    viewer = 2 * max_publishers + 1
    return max(viewer, 2 + MAX_VIDEO_LAYERS) if want == "send" else viewer


def parse_offer(text: str, *, want: str, section_limit: int | None = None) -> Offer:
    """Parse and check an offer; ``want`` is ``"send"`` (WHIP) or ``"recv"`` (WHEP) from the
    client's point of view. Raises a ``BadOffer`` that says what is wrong.

    ``section_limit`` (``max_sections``) is checked on the raw text, before aiortc parses it:
    every section costs parse time, transceivers, answer bytes and sockets."""
    if len(bytes(text, "utf-8")) > MAX_SDP_BYTES:
        raise OfferTooLarge(f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    if not text.strip().startswith("v=0"):
        raise BadOffer("body is not an SDP offer (must start with v=0)")
    if section_limit is not None:
        sections = sum(1 for line in text.splitlines() if line.startswith("m="))
        if sections > section_limit:
            raise TooManySections(
                f"the offer has {sections} media sections; this room takes at most "
                f"{section_limit} (audio and video per publisher slot, and one data channel)"
            )
    try:
        parsed = sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise BadOffer(f"malformed SDP: {exc}") from exc
    media = [
        OfferedMedia(
            kind=m.kind,
            direction=m.direction or "sendrecv",
            offered=[OfferedCodec(c.name, dict(c.parameters)) for c in m.rtp.codecs],
        )
        for m in parsed.media
    ]
    av = [m for m in media if m.kind in ("audio", "video")]
    if not av:
        raise BadOffer("the offer has no audio or video media section", "no_media")
    for m in av:
        if m.direction not in ("sendrecv", "inactive") and want not in m.direction:
            raise BadOffer(
                f"{m.kind} section is {m.direction}; this endpoint needs {want}",
                "wrong_direction",
            )
        if not m.codecs:
            raise BadOffer(f"{m.kind} section lists no codecs")
    for section in parsed.media:
        ice = section.ice
        if section.kind in ("audio", "video") and (
            ice is None or ice.usernameFragment is None or section.dtls is None
        ):
            raise BadOffer("offer lacks ICE credentials or DTLS fingerprint")
    return Offer(sdp=text, media=media)
