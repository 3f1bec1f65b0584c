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
    from sfu.consumer import Consumer
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


class LayerPolicy:
    """Which layer an ``auto`` viewer should get, from its own feedback, with hysteresis.

    Down after ``down_after_s`` of trouble: loss above ``loss_down``, or a REMB under the high
    layer's bitrate divided by ``remb_margin`` (a REMB estimator that sees no congestion keeps
    its estimate a little above what arrives, so only one well under it says the link cannot
    carry the layer). Up after ``up_after_s`` with loss at most ``loss_clean``: on the low
    layer REMB cannot say more (estimators cap it near 1.5x what arrives), so going up is the
    probe. Pure: fed once per tick, never per packet."""

    __slots__ = ("_since", "down_after_s", "layer", "loss_clean", "loss_down", "remb_margin",
                 "up_after_s")

    def __init__(self, *, down_after_s: float = 2.0, up_after_s: float = 8.0,
                 loss_down: float = 0.10, loss_clean: float = 0.02,
                 remb_margin: float = 1.3) -> None:
        self.down_after_s = down_after_s
        self.up_after_s = up_after_s
        self.loss_down = loss_down
        self.loss_clean = loss_clean
        self.remb_margin = remb_margin
        self.layer = HIGH_LAYER
        self._since: float | None = None  # when the condition for leaving this layer began

    def update(self, now: float, loss: float | None, remb_bps: int | None,
               high_bps: float, resent: float = 0.0) -> str:
        """The layer to send from ``now`` on. ``loss`` is the viewer's latest fraction lost
        (0..1, None before its first report), ``remb_bps`` its latest REMB (None if none),
        ``resent`` the share of its packets resent on its NACKs since the last update (a
        browser that recovers its losses by NACK reports little loss: the NACKs say it)."""
        loss = max(loss or 0.0, resent) if loss is not None or resent else None
        if self.layer == HIGH_LAYER:
            starved = remb_bps is not None and remb_bps * self.remb_margin < high_bps
            leave = starved or (loss is not None and loss > self.loss_down)
            wait, other = self.down_after_s, LOW_LAYER
        else:
            leave = loss is None or loss <= self.loss_clean
            wait, other = self.up_after_s, HIGH_LAYER
        if not leave:
            self._since = None
        elif self._since is None:
            self._since = now
        if self._since is not None and now - self._since >= wait:
            self.layer, self._since = other, None
        return self.layer


class AutoLayer:
    """One ``auto`` viewer's video of a two-layer slot: its policy, fed on the node's tick with
    the viewer's loss and REMB and the high layer's bitrate, moves its consumer between layers
    (``Consumer.switch_to``: at the target's keyframe, no renegotiation)."""

    __slots__ = ("_at", "_octets", "_resent", "_sent", "consumer", "high", "policy")

    def __init__(self, consumer: Consumer, high: Producer) -> None:
        self.consumer = consumer
        self.high = high
        self.policy = LayerPolicy()
        self._octets = high.octets
        self._sent, self._resent = consumer.packets, consumer.retransmits
        self._at: float | None = None

    def tick(self, now: float) -> None:
        high, low = self.high, self.high.low
        if low is None or low.closed or high.closed:
            return
        bps = 0.0
        if self._at is not None and now > self._at:
            bps = (high.octets - self._octets) * 8 / (now - self._at)
        self._octets, self._at = high.octets, now
        consumer = self.consumer
        sent = consumer.packets - self._sent
        resent = (consumer.retransmits - self._resent) / sent if sent > 0 else 0.0
        self._sent, self._resent = consumer.packets, consumer.retransmits
        layer = self.policy.update(now, consumer.loss, consumer.remb_bps, bps, resent)
        self.consumer.switch_to(low if layer == LOW_LAYER else high)
