"""Video layers of one publisher slot, and which one a viewer is sent.

aiortc cannot receive RID simulcast, so an anchor page that offers a low layer sends it as a
second video track: the second video section of a WHIP offer is the low layer of the first
(``Publisher.answer``). The low layer's ``Producer`` hangs off the high one (``Producer.low``)
and is not one of the publisher's producers, so FLV, recording, workers and metrics keep seeing
one video per slot. A viewer's ``?quality=`` picks the layer its consumer forwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from sfu.errors import BadQuality

if TYPE_CHECKING:
    from sfu.producer import Producer

Quality = Literal["auto", "high", "low"]
QUALITIES: tuple[Quality, ...] = ("auto", "high", "low")
LOW_LAYER = "low"
MAX_VIDEO_LAYERS = 2  # video sections a publisher sends; more are answered inactive
HIGH_LAYER = "high"


def parse_quality(value: str | None) -> Quality:
    """A viewer's ``?quality=``: absent means ``auto``; anything else but the three is refused."""
    if value is None or value == "":
        return "auto"
    for quality in QUALITIES:
        if value == quality:
            return quality
    raise BadQuality(f"quality must be one of {', '.join(QUALITIES)}")


def layer_for(producer: Producer, quality: Quality) -> Producer:
    """The producer a viewer of ``producer``'s slot is sent: the low layer when pinned to low
    and the slot has one that is open; otherwise the slot's own (high) producer. ``auto``
    starts on high."""
    low = producer.low
    if quality == "low" and low is not None and not low.closed:
        return low
    return producer
