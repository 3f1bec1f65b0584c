"""Viewer QoE reports: what each viewer's player sees, checked, rate-limited and aggregated.

Every viewer page sends a ``qoe`` client event every 10 s (``web/js/qoe.js``). A report is never
published to the room and is never answered when it is taken; it is counted by result
(``RESULTS``) and lands in two places:

- this process's histograms (fps, stall ratio, jitter-buffer delay, FLV buffer, by transport
  only: rooms are unbounded, so a room label would make the series unbounded too; per room
  figures are what ``GET /rooms/{room}/health`` is for). Prometheus sums the processes.
- the room's last report per viewer identity, merged through the store (a hash in the room's
  scope, so the room's close takes it): a viewer's WebRTC data channel ends on its SFU node
  and an FLV viewer's ``/ws/events`` on a signaling process, yet any front door's ``/health``
  sees both. A report older than ``EXPIRY_S`` is left out and pruned.

A refused report changes nothing: ``malformed`` (fails the schema or carries a non-finite
number) and ``too_large`` (over ``MAX_REPORT_BYTES``) get the usual ``error`` reply; past the
identity's bucket (``RATE_LIMITS``) a report is dropped silently, so a flood gets no reply flood.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from signaling.live.resume import ResumeBudget, ResumeLimits
from signaling.live.schema import EventError
from signaling.store import Store

TYPE = "qoe"
KEY = "qoe"  # the room scope's hash: identity -> packed last report
MAX_REPORT_BYTES = 1024
EXPIRY_S = 30.0
TRANSPORTS = ("webrtc", "flv")
RESULTS = ("accepted", "malformed", "too_large", "rate_limited")
RATE_LIMITS = ResumeLimits(burst=2, per_s=0.5)  # one report per 2 s per identity, burst 2
MAX_BUCKETS = 100_000  # (room, identity) buckets kept in this process, least recent dropped
PRUNE_EVERY = 64  # accepted reports of a room between two prunes of its expired ones
MAX_TYPE_PEEK = 8  # map entries looked at to tell a refused message's type


@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram's fixed buckets, for one figure per transport."""

    name: str
    help: str
    bounds: tuple[float, ...]

    def empty(self) -> list[float]:
        return [0.0] * (len(self.bounds) + 2)  # bucket counts, +Inf, then the sum


HISTOGRAMS = (
    Histogram("shopcast_qoe_fps", "Viewers' decoded frames per second, by transport.",
              (5, 10, 15, 20, 25, 30, 45, 60)),
    Histogram("shopcast_qoe_stall_ratio", "Share of viewers' playing time spent frozen "
              "(WebRTC freezes) or rebuffering (FLV), by transport.",
              (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)),
    Histogram("shopcast_qoe_jitter_buffer_seconds", "WebRTC viewers' mean jitter-buffer delay "
              "per frame.", (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2)),
    Histogram("shopcast_qoe_flv_buffer_seconds", "FLV viewers' seconds buffered ahead of "
              "playback.", (0.1, 0.25, 0.5, 1, 2, 4, 8)),
)


def stall_ratio(report: Mapping[str, Any]) -> float:
    played = float(report["played_s"])
    return min(1.0, float(report["freeze_s"]) / played) if played > 0 else 0.0


def _figures(report: Mapping[str, Any]) -> dict[str, float | None]:
    """The histogram figures of one report (None: this report does not carry it)."""
    jitter = report.get("jitter_buffer_ms")
    return {
        "shopcast_qoe_fps": float(report["fps"]),
        "shopcast_qoe_stall_ratio": stall_ratio(report),
        "shopcast_qoe_jitter_buffer_seconds": None if jitter is None else jitter / 1000,
        "shopcast_qoe_flv_buffer_seconds": report.get("buffer_s"),
    }


def report_type(raw: bytes) -> str | None:
    """The ``type`` of a message the schema refused, read from its first few map entries
    without decoding the rest, so a refused report is counted whatever made it fail."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(raw), 1))
    try:
        unpacker.feed(raw)
        for _ in range(min(unpacker.read_map_header(), MAX_TYPE_PEEK)):
            if unpacker.unpack() == "type":
                kind = unpacker.unpack()
                return kind if isinstance(kind, str) else None
            unpacker.skip()
    except Exception:  # garbage of any kind: not a report we can name
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-1), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _spread(values: Iterable[float | None]) -> dict[str, float | None]:
    taken = [v for v in values if v is not None]
    return {"p50": percentile(taken, 0.5), "p90": percentile(taken, 0.9),
            "p99": percentile(taken, 0.99)}


def _count(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def summarize(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``/health``'s body from the room's live reports."""
    played = sum(float(r["played_s"]) for r in reports)
    return {
        "viewers_reporting": len(reports),
        "stall_ratio": min(1.0, sum(float(r["freeze_s"]) for r in reports) / played)
        if played > 0 else 0.0,
        "fps": _spread(float(r["fps"]) for r in reports),
        "jitter_buffer_ms": _spread(r.get("jitter_buffer_ms") for r in reports),
        "flv_buffer_s": _spread(r.get("buffer_s") for r in reports),
        "transports": _count(str(r["transport"]) for r in reports),
        "layers": _count(str(r.get("layer") or "single") for r in reports),
    }


class QoeReports:
    """Takes ``qoe`` reports for the gateway; ``health(room)`` and ``metrics()`` read them."""

    def __init__(self, store: Store, *, expiry_s: float = EXPIRY_S,
                 limits: ResumeLimits = RATE_LIMITS,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.expiry_s = expiry_s
        self.limits = limits
        self.clock = clock
        self.results = dict.fromkeys(RESULTS, 0)
        self.histograms = {h.name: {t: h.empty() for t in TRANSPORTS} for h in HISTOGRAMS}
        self._buckets: dict[tuple[str, str], ResumeBudget] = {}  # least recently used first
        self._since_prune: dict[str, int] = {}

    def refused(self, raw: bytes, exc: EventError) -> None:
        """The schema refused ``raw``: count it when it was a report."""
        if report_type(raw) == TYPE:
            too_large = exc.code == "too_large" or len(raw) > MAX_REPORT_BYTES
            self.results["too_large" if too_large else "malformed"] += 1

    async def take(self, room: str, identity: str, report: dict[str, Any]) -> None:
        """A report the schema accepted (so within ``MAX_REPORT_BYTES``: its fields' bounds
        keep it far below): checked further, rate-limited, then recorded. ``EventError`` for
        one refused with a reply; a rate-limited one is only counted."""
        problem = self._problem(report)
        if problem:
            self.results["malformed"] += 1
            raise EventError("invalid", f"qoe.{problem}", str(report.get("cid", "")))
        if self._bucket(room, identity).take() > 0:
            self.results["rate_limited"] += 1
            return
        kept = {k: v for k, v in report.items() if k not in ("type", "cid")}
        kept["at"] = self.clock()
        await self.store.hset(room, KEY, identity, msgpack.packb(kept, use_bin_type=True))
        self.results["accepted"] += 1
        self._observe(report)
        self._since_prune[room] = self._since_prune.get(room, 0) + 1
        if self._since_prune[room] >= PRUNE_EVERY:
            await self.live_reports(room)  # prunes the expired ones

    async def live_reports(self, room: str) -> list[dict[str, Any]]:
        """The room's last report per viewer within ``expiry_s``; older ones are pruned."""
        self._since_prune.pop(room, None)
        now, live = self.clock(), []
        for identity, packed in (await self.store.hgetall(room, KEY)).items():
            report = msgpack.unpackb(packed, raw=False)
            if now - float(report["at"]) > self.expiry_s:
                await self.store.hdel(room, KEY, identity)
            else:
                live.append(report)
        return live

    async def health(self, room: str) -> dict[str, Any]:
        return {"room": room, "expiry_s": self.expiry_s,
                **summarize(await self.live_reports(room))}

    def metrics(self) -> list[str]:
        """Prometheus text: the results counter and the histograms, this process's own."""
        lines = ["# HELP shopcast_qoe_reports_total Viewer QoE reports received by this "
                 "process, by result.", "# TYPE shopcast_qoe_reports_total counter"]
        lines += [f'shopcast_qoe_reports_total{{result="{r}"}} {n}'
                  for r, n in self.results.items()]
        for spec in HISTOGRAMS:
            lines += [f"# HELP {spec.name} {spec.help}", f"# TYPE {spec.name} histogram"]
            for transport, counts in self.histograms[spec.name].items():
                label = f'transport="{transport}"'
                cumulative = 0.0
                for bound, n in zip((*spec.bounds, "+Inf"), counts, strict=False):
                    cumulative += n
                    lines.append(f'{spec.name}_bucket{{{label},le="{bound}"}} {cumulative:g}')
                lines.append(f"{spec.name}_sum{{{label}}} {counts[-1]:g}")
                lines.append(f"{spec.name}_count{{{label}}} {cumulative:g}")
        return lines

    def _problem(self, report: Mapping[str, Any]) -> str | None:
        """What the schema's types and ranges cannot say: the transport's value, finiteness."""
        if report["transport"] not in TRANSPORTS:
            return f"transport must be one of {', '.join(TRANSPORTS)}"
        for name, value in report.items():
            if isinstance(value, float) and not math.isfinite(value):
                return f"{name} must be a finite number"
        return None

    def _bucket(self, room: str, identity: str) -> ResumeBudget:
        key = (room, identity)
        bucket = self._buckets.pop(key, None) or ResumeBudget(self.limits)
        self._buckets[key] = bucket
        if len(self._buckets) > MAX_BUCKETS:
            del self._buckets[next(iter(self._buckets))]
        return bucket

    def _observe(self, report: Mapping[str, Any]) -> None:
        transport, figures = str(report["transport"]), _figures(report)
        for spec in HISTOGRAMS:
            value = figures[spec.name]
            if value is None:
                continue
            counts = self.histograms[spec.name][transport]
            index = next((i for i, b in enumerate(spec.bounds) if value <= b), len(spec.bounds))
            counts[index] += 1
            counts[-1] += value
