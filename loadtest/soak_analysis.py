"""Is a soak flat? Pure analysis of the soak's /proc samples, kept free of I/O for unit tests.

A sample is ``{"t": seconds since start, "phase", "procs": {label: {"pid", "rss_kib", "fds"}}}``
with phase ``start`` (idle, before any room), ``churn`` or ``end`` (idle again, after the last
room closed and a settle). Over the churn samples after the warm-up, the first window and the
last window are compared by their medians (one sample caught mid-join or mid-close does not
decide the verdict), and a least-squares slope over every post-warm-up sample says where the
trend goes per hour. A process whose pid changed after the
warm-up (a worker respawned) is reported, since its figures then compare two processes.
The idle start and idle end are compared apart: at no load, what churn left behind shows
without the noise of clients coming and going.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from loadtest.stats import linear_slope

METRICS = ("rss_kib", "fds")
DEFAULT_TOLERANCE_PCT = 10.0
MIN_WINDOW_SAMPLES = 2


def default_window_s(duration_s: float, warmup_s: float) -> float:
    """Windows of 2 min, or a quarter of the post-warm-up time on short runs."""
    return max(10.0, min(120.0, (duration_s - warmup_s) / 4))


def _series(samples: Sequence[dict[str, Any]], label: str, metric: str,
            start: float, end: float) -> list[tuple[float, float]]:
    out = []
    for sample in samples:
        proc = sample["procs"].get(label)
        if proc is not None and start <= sample["t"] <= end and proc.get(metric) is not None:
            out.append((float(sample["t"]), float(proc[metric])))
    return out


def growth(samples: Sequence[dict[str, Any]], label: str, metric: str, warmup_s: float,
           window_s: float) -> dict[str, Any]:
    """First post-warm-up window vs last window of one process's metric, and the hourly slope."""
    post = _series(samples, label, metric, warmup_s, float("inf"))
    if not post:
        return {"samples": 0, "first": None, "last": None, "growth_pct": None,
                "slope_per_h": None, "slope_pct_per_h": None}
    end = post[-1][0]
    first = [v for t, v in post if t <= warmup_s + window_s]
    last = [v for t, v in post if t >= end - window_s]
    ok = len(first) >= MIN_WINDOW_SAMPLES and len(last) >= MIN_WINDOW_SAMPLES
    first_m = statistics.median(first) if ok else None
    last_m = statistics.median(last) if ok else None
    pct = None
    if first_m is not None and last_m is not None and first_m > 0:
        pct = round(100 * (last_m - first_m) / first_m, 2)
    slope = linear_slope([t for t, _ in post], [v for _, v in post])
    slope_h = None if slope is None else slope * 3600
    return {
        "samples": len(post), "first": first_m, "last": last_m, "growth_pct": pct,
        "slope_per_h": None if slope_h is None else round(slope_h, 1),
        "slope_pct_per_h": (round(100 * slope_h / first_m, 2)
                            if slope_h is not None and first_m else None),
    }


def pids_of(samples: Sequence[dict[str, Any]], label: str, since: float) -> list[int]:
    """The distinct pids a label had from `since` on, in order of appearance."""
    out: list[int] = []
    for sample in samples:
        proc = sample["procs"].get(label)
        if sample["t"] >= since and proc is not None and proc["pid"] not in out:
            out.append(proc["pid"])
    return out


def labels(samples: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for sample in samples:
        seen.extend(label for label in sample["procs"] if label not in seen)
    return seen


def idle_change(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per process: each metric at the idle start and at the idle end (None where missing)."""
    start = next((s for s in samples if s.get("phase") == "start"), None)
    end = next((s for s in reversed(samples) if s.get("phase") == "end"), None)
    out: dict[str, Any] = {}
    for label in labels(samples):
        before = start["procs"].get(label) if start else None
        after = end["procs"].get(label) if end else None
        out[label] = {m: {"start": before.get(m) if before else None,
                          "end": after.get(m) if after else None} for m in METRICS}
    return out


def flatness(samples: Sequence[dict[str, Any]], warmup_s: float, window_s: float,
             tolerance_pct: float = DEFAULT_TOLERANCE_PCT) -> dict[str, Any]:
    """Per process and metric over the churn samples: growth and slope; a process is flat when
    each metric's growth is within +-tolerance. The verdict is ``flat``, ``growing`` or
    ``inconclusive`` (a window with too few samples: the run was too short for its warm-up).
    The idle start and end ride along (``idle``) without a verdict of their own."""
    idle = idle_change(samples)
    samples = [s for s in samples if s.get("phase", "churn") == "churn"]
    per_proc: dict[str, Any] = {}
    verdict = "flat"
    for label in labels(samples):
        entry: dict[str, Any] = {"pids": pids_of(samples, label, warmup_s)}
        entry["restarted"] = len(entry["pids"]) > 1
        for metric in METRICS:
            g = growth(samples, label, metric, warmup_s, window_s)
            g["flat"] = None if g["growth_pct"] is None else abs(g["growth_pct"]) <= tolerance_pct
            entry[metric] = g
            if g["flat"] is None:
                verdict = "inconclusive" if verdict == "flat" else verdict
            elif not g["flat"]:
                verdict = "growing"
        per_proc[label] = entry
    if not per_proc:
        verdict = "inconclusive"
    return {"warmup_s": warmup_s, "window_s": window_s, "tolerance_pct": tolerance_pct,
            "verdict": verdict, "processes": per_proc, "idle": idle}


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """Human lines: one per process and metric, then the verdict."""
    lines = []
    for label, entry in result["processes"].items():
        for metric in METRICS:
            g = entry[metric]
            unit = " KiB" if metric == "rss_kib" else ""
            mark = {True: "flat", False: "GROWING", None: "n/a"}[g["flat"]]
            lines.append(
                f"  {label:<10} {metric:<7} first {g['first']}{unit} -> last {g['last']}{unit}"
                f"  growth {g['growth_pct']} %  slope {g['slope_per_h']}{unit}/h"
                f" ({g['slope_pct_per_h']} %/h)  {mark}"
                + ("  [pid changed: " + ",".join(map(str, entry["pids"])) + "]"
                   if entry["restarted"] else ""))
    for label, entry in result.get("idle", {}).items():
        rss, fds = entry["rss_kib"], entry["fds"]
        lines.append(f"  idle {label:<10} rss {rss['start']} -> {rss['end']} KiB, "
                     f"fds {fds['start']} -> {fds['end']}")
    lines.append(f"verdict: {result['verdict']} (tolerance +-{result['tolerance_pct']} %, "
                 f"warm-up {result['warmup_s']} s, windows of {result['window_s']} s)")
    return lines
