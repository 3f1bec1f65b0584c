"""The anchor's network-quality score: 0 (no media) to 5 (excellent), from a publisher leg's
receive statistics over one window (every ``WINDOW_S``), never per packet.

The model is the one LiveKit's connection quality and TRTC's quality levels are built on: an
ITU-T G.107 E-model R-factor lowered by loss and by delay (RTT when known, jitter), turned
into a MOS and cut into levels. Two things a publisher's uplink shows that a call's audio
does not are folded in as further impairments: received video bitrate well below the
encoder's target (the offer's ``b=TIAS``/``b=AS``), and the node's REMB asking for far less
than arrives (its delay-based estimator saw the path queue). On a path whose loss, delay and
overuse alone score ``GOOD`` or better, a shortfall against the target never takes the score
below ``FAIR``: an anchor that stepped down on purpose is not told to step down again.

Hysteresis (``QualityTracker``): a fall of two levels or more is taken at once, a fall of one
needs two windows in a row, a rise needs two windows at or above the new level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_S = 2.0
EXCELLENT, GOOD, FAIR, POOR, BAD, DOWN = 5, 4, 3, 2, 1, 0
PROMPT_AT = POOR  # the anchor's page shows its advice at this score and below
SCORES = (DOWN, BAD, POOR, FAIR, GOOD, EXCELLENT)
# MOS at or above which a score is reached, best first (the E-model's MOS tops out at 4.5)
_MOS_LEVELS = ((4.2, EXCELLENT), (3.9, GOOD), (3.5, FAIR), (3.0, POOR), (0.0, BAD))
_R_BEST = 93.2  # the E-model's default R with no impairment
_JITTER_DELAY_FACTOR = 2.0  # a jitter buffer holds about twice the jitter
_FIXED_DELAY_MS = 20.0  # packetization and decode, not measured
_MIN_PACKETS = 10  # fewer in a window: too few to score loss from (audio alone sends 100)


@dataclass(frozen=True, slots=True)
class ReceiveCounters:
    """A publisher leg's cumulative receive counters at one instant (media SSRCs only, not
    RTX): packets expected from sequence numbers and received, video payload bytes, the
    interarrival jitter (RFC 3550) of its video, and what is known of RTT, target and REMB."""

    expected: int
    received: int
    video_octets: int
    jitter_ms: float
    rtt_ms: float | None = None
    target_bps: int | None = None
    remb_bps: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """What happened between two samples: the inputs of the score."""

    seconds: float
    expected: int
    received: int
    bitrate_bps: float
    jitter_ms: float
    rtt_ms: float | None = None
    target_bps: int | None = None
    remb_bps: int | None = None

    @property
    def loss(self) -> float:
        """Fraction of packets lost on the way in (before retransmission)."""
        if self.expected <= 0:
            return 0.0
        return min(max(self.expected - self.received, 0) / self.expected, 1.0)


def window(before: ReceiveCounters, after: ReceiveCounters, seconds: float) -> Window:
    """The window between two samples of the same leg (counters that went backwards, as a
    new SSRC restarting its sequence, count as nothing)."""
    seconds = max(seconds, 1e-3)
    return Window(
        seconds=seconds,
        expected=max(after.expected - before.expected, 0),
        received=max(after.received - before.received, 0),
        bitrate_bps=max(after.video_octets - before.video_octets, 0) * 8 / seconds,
        jitter_ms=after.jitter_ms,
        rtt_ms=after.rtt_ms,
        target_bps=after.target_bps,
        remb_bps=after.remb_bps,
    )


def _delay_impairment(delay_ms: float) -> float:
    """G.107's simplified delay impairment Id."""
    return 0.024 * delay_ms + (0.11 * (delay_ms - 177.3) if delay_ms > 177.3 else 0.0)


def _loss_impairment(loss: float) -> float:
    """Effective equipment impairment of random loss for a robust codec (grows fast first)."""
    return 30.0 * math.log1p(15.0 * loss)


def _shortfall_impairment(w: Window) -> float:
    """Video arriving at well under the encoder's target (20 % under is normal play)."""
    if not w.target_bps or w.target_bps <= 0:
        return 0.0
    shortfall = 1.0 - min(w.bitrate_bps / w.target_bps, 1.0)
    return 25.0 * max(shortfall - 0.2, 0.0)


def _overuse_impairment(w: Window) -> float:
    """The node's REMB asking for far less than arrives: its estimator saw the path queue."""
    if w.remb_bps is None or w.bitrate_bps <= 0:
        return 0.0
    return 20.0 * max(0.7 - w.remb_bps / w.bitrate_bps, 0.0)


def path_r_factor(w: Window) -> float:
    """R from what the path shows (loss, delay, overuse), leaving the encoder's choice out."""
    delay = _FIXED_DELAY_MS + _JITTER_DELAY_FACTOR * w.jitter_ms + (w.rtt_ms or 0.0) / 2
    return (_R_BEST - _delay_impairment(delay) - _loss_impairment(w.loss)
            - _overuse_impairment(w))


def r_factor(w: Window) -> float:
    return path_r_factor(w) - _shortfall_impairment(w)


def mos(r: float) -> float:
    """G.107's R -> MOS (1.0 .. 4.5)."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r)


def _level(value: float) -> int:
    return next(level for floor, level in _MOS_LEVELS if value >= floor)


def raw_score(w: Window) -> int:
    """The score of one window, without hysteresis."""
    if w.received == 0:
        return DOWN
    if w.expected < _MIN_PACKETS:  # too little traffic to judge loss: judge delay alone
        w = Window(w.seconds, 0, 0, w.bitrate_bps, w.jitter_ms, w.rtt_ms, None, None)
    score = _level(mos(r_factor(w)))
    if score < FAIR and _level(mos(path_r_factor(w))) >= GOOD:
        return FAIR  # on a clean path a low bitrate alone never prompts the anchor
    return score


class QualityTracker:
    """One publisher leg's score over time, with hysteresis; ``update`` once per window."""

    __slots__ = ("_pending", "score")

    def __init__(self) -> None:
        self.score: int | None = None  # None before the first window
        self._pending: list[int] = []  # raw scores that disagree with ``score``, newest last

    def update(self, raw: int) -> bool:
        """Take one window's raw score; True when the published score changed."""
        if self.score is None:
            self.score = raw
            return True
        if raw == self.score:
            self._pending.clear()
            return False
        falling = raw < self.score
        if self._pending and (self._pending[-1] < self.score) != falling:
            self._pending.clear()  # the direction turned: start again
        self._pending.append(raw)
        if falling and self.score - raw >= 2:
            self.score = raw
        elif len(self._pending) >= 2:  # the milder of the two windows
            self.score = max(self._pending[-2:]) if falling else min(self._pending[-2:])
        else:
            return False
        self._pending.clear()
        return True


def offered_video_target_bps(sdp: str) -> int | None:
    """The encoder's video target from its offer: the first video section's ``b=TIAS``
    (bit/s, RFC 3890) or else ``b=AS`` (kbit/s); None when it names neither."""
    in_video = False
    tias = as_kbps = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_video:
                break
            in_video = line.startswith("m=video")
        elif in_video and line.startswith("b="):
            kind, _, value = line[2:].partition(":")
            if not value.strip().isdigit():
                continue
            if kind == "TIAS":
                tias = int(value)
            elif kind == "AS":
                as_kbps = int(value)
    if tias:
        return tias
    return as_kbps * 1000 if as_kbps else None
