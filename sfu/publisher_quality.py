"""Scores every WebRTC publisher leg of the node once per window (``sfu/network_quality.py``)
and tells the room when a score changes; keeps the figures ``/metrics`` shows.

It runs on the node's tick and reads the counters the receive path already keeps (aiortc's
per-SSRC statistics, the producers' byte counts), so nothing is added per packet. RTMP
publishers are not scored: TCP hides loss and jitter from the node (a slow uplink shows as
retransmission delay in the encoder, not here), so their door reports no score.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from sfu.network_quality import (
    SCORES,
    WINDOW_S,
    QualityTracker,
    ReceiveCounters,
    Window,
    raw_score,
    window,
)

logger = logging.getLogger("shopcast.sfu.network_quality")

SCORED_DOORS = ("whip",)  # the doors whose publishers get a score (RTMP: see above)


class ScoredPublisher(Protocol):
    """A publisher leg that can report its receive counters (``Publisher``)."""

    @property
    def id(self) -> str: ...

    @property
    def room(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def slot(self) -> int: ...

    @property
    def transport(self) -> str: ...

    @property
    def live(self) -> bool: ...

    def receive_counters(self) -> ReceiveCounters: ...


ScoreChanged = Callable[[ScoredPublisher, int, Window], None]


@dataclass
class _Leg:
    door: str
    counters: ReceiveCounters
    at: float
    tracker: QualityTracker = field(default_factory=QualityTracker)


class PublisherQuality:
    """The node's publisher scores: ``tick`` about once a second, scores every ``WINDOW_S``."""

    def __init__(self, on_change: ScoreChanged, window_s: float = WINDOW_S) -> None:
        self._on_change = on_change
        self._window_s = window_s
        self._legs: dict[str, _Leg] = {}
        self._next_at: float | None = None
        # histogram of every window's published score, by door
        self.histogram: dict[str, list[int]] = {door: [0] * len(SCORES) for door in SCORED_DOORS}

    def tick(self, now: float, publishers: Iterable[ScoredPublisher]) -> None:
        if self._next_at is not None and now < self._next_at:
            return
        self._next_at = now + self._window_s
        seen: set[str] = set()
        for publisher in publishers:
            if not publisher.live:
                continue
            seen.add(publisher.id)
            self._score(publisher, now)
        for gone in self._legs.keys() - seen:
            del self._legs[gone]

    def _score(self, publisher: ScoredPublisher, now: float) -> None:
        counters = publisher.receive_counters()
        leg = self._legs.get(publisher.id)
        if leg is None:  # the first sample only starts the first window
            self._legs[publisher.id] = _Leg(publisher.transport, counters, now)
            return
        measured = window(leg.counters, counters, now - leg.at)
        leg.counters, leg.at = counters, now
        raw = raw_score(measured)
        changed = leg.tracker.update(raw)
        score = leg.tracker.score
        assert score is not None  # set by the first update
        self.histogram.setdefault(leg.door, [0] * len(SCORES))[score] += 1
        logger.debug("publisher %s window: raw %d, loss %.3f, jitter %.1f ms, %.0f kbit/s, "
                     "remb %s", publisher.id, raw, measured.loss, measured.jitter_ms,
                     measured.bitrate_bps / 1000, measured.remb_bps)
        if changed:
            logger.info("publisher %s room=%s network quality %d (loss %.1f%%, jitter %.0f ms, "
                        "%.0f kbit/s)", publisher.id, publisher.room, score,
                        measured.loss * 100, measured.jitter_ms, measured.bitrate_bps / 1000)
            self._on_change(publisher, score, measured)

    def score(self, publisher_id: str) -> int | None:
        """A publisher's current score; None before its first window ends."""
        leg = self._legs.get(publisher_id)
        return leg.tracker.score if leg is not None else None

    def metrics(self) -> list[str]:
        """Prometheus lines: publishers per current score and the histogram of scores, by
        door (bounded labels: doors x six scores)."""
        now: dict[tuple[str, int], int] = {}
        for leg in self._legs.values():
            if leg.tracker.score is not None:
                key = (leg.door, leg.tracker.score)
                now[key] = now.get(key, 0) + 1
        name = "shopcast_publisher_network_quality"
        lines = [
            f"# HELP {name} WebRTC publishers by their current network-quality score "
            "(0 no media .. 5 excellent), by door.",
            f"# TYPE {name} gauge",
        ]
        lines += [f'{name}{{door="{door}",score="{s}"}} {now.get((door, s), 0)}'
                  for door in self.histogram for s in SCORES]
        hist = f"{name}_score"
        lines += [
            f"# HELP {hist} Every scoring window's published score (every {self._window_s:g} s "
            "per publisher), by door.",
            f"# TYPE {hist} histogram",
        ]
        for door, counts in self.histogram.items():
            running = total = 0
            for s in SCORES:
                running += counts[s]
                total += s * counts[s]
                lines.append(f'{hist}_bucket{{door="{door}",le="{s}"}} {running}')
            lines += [f'{hist}_bucket{{door="{door}",le="+Inf"}} {running}',
                      f'{hist}_sum{{door="{door}"}} {total}',
                      f'{hist}_count{{door="{door}"}} {running}']
        return lines
