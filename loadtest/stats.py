"""Pure helpers shared by the scenarios: tokens, percentiles, window deltas, report files.

Kept free of aiortc and of the network so tests can exercise them in milliseconds.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt

REPORT_DIR = Path(__file__).resolve().parent / "reports"


def mint_token(secret: str, room: str, identity: str, grants: list[str], ttl: int) -> str:
    """HS256 token with the public claim set (loadtest never imports the server's code)."""
    now = int(time.time())
    warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
    claims = {"sub": identity, "room": room, "grants": grants, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


def percentiles(values: Sequence[float], ps: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus n, mean and max; {} for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p}": float(ordered[min(len(ordered) - 1, len(ordered) * p // 100)]) for p in ps}
    out.update(n=len(ordered), max=float(ordered[-1]), mean=round(statistics.fmean(ordered), 2))
    return out


def window_loss(before: Sequence[int], after: Sequence[int]) -> tuple[int, int, int]:
    """(received, unique, lost) in a window from two (packets, unique, expected) snapshots.

    A stream that had not started at `before` (all zeros) counts from its first packet.
    """
    received = after[0] - before[0]
    unique = after[1] - before[1]
    expected = after[2] - before[2]
    return received, unique, max(0, expected - unique)


def linear_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than two distinct xs)."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den


def write_report(report: dict[str, Any], path: str, prefix: str = "report") -> Path:
    """Write JSON to `path`, or to loadtest/reports/<prefix>-<time>.json (gitignored)."""
    out = Path(path) if path else REPORT_DIR / time.strftime(f"{prefix}-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out
