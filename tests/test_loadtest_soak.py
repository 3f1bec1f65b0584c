"""The churn soak's flatness analysis (loadtest.soak_analysis), on made-up samples: pure, fast.

The soak itself is a 30-minute benchmark (``python -m loadtest soak``), never part of the suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from loadtest.soak_analysis import default_window_s, flatness, growth, verdict_lines


def _samples(rss: list[float], fds: list[float], step_s: float = 10.0,
             pids: list[int] | None = None) -> list[dict[str, Any]]:
    """Churn samples every `step_s` of one process ``server`` with the given series, between
    an idle start and an idle end sample."""
    out = [{"t": 0.0, "phase": "start", "procs": {"server": {"pid": 1, "rss_kib": 90_000,
                                                             "fds": 20}}}]
    for i, (r, f) in enumerate(zip(rss, fds, strict=True)):
        pid = pids[i] if pids else 1
        out.append({"t": (i + 1) * step_s, "phase": "churn",
                    "procs": {"server": {"pid": pid, "rss_kib": r, "fds": f}}})
    out.append({"t": (len(rss) + 2) * step_s, "phase": "end",
                "procs": {"server": {"pid": 1, "rss_kib": 95_000, "fds": 21}}})
    return out


def test_steady_series_is_flat_even_with_an_outlier() -> None:
    rss = [100_000.0] * 30
    rss[25] = 180_000.0  # one sample caught mid-join: the window median ignores it
    result = flatness(_samples(rss, [40.0] * 30), warmup_s=50, window_s=60)
    server = result["processes"]["server"]
    assert result["verdict"] == "flat"
    assert server["rss_kib"]["growth_pct"] == 0.0
    assert server["fds"]["flat"] is True
    assert server["restarted"] is False


def test_linear_growth_is_caught_with_its_slope() -> None:
    # 100 MiB growing 1 % per sample: 10 s apart, so 360 %/h of the first window.
    rss = [100_000.0 * (1 + 0.01 * i) for i in range(40)]
    result = flatness(_samples(rss, [40.0] * 40), warmup_s=50, window_s=60)
    g = result["processes"]["server"]["rss_kib"]
    assert result["verdict"] == "growing"
    assert g["flat"] is False
    assert g["growth_pct"] > 10
    assert g["slope_per_h"] == pytest.approx(1000.0 * 360, rel=1e-6)
    assert any("GROWING" in line for line in verdict_lines(result))


def test_fd_leak_alone_makes_the_verdict() -> None:
    fds = [40.0 + i for i in range(30)]  # one fd more every sample
    result = flatness(_samples([100_000.0] * 30, fds), warmup_s=50, window_s=60)
    assert result["verdict"] == "growing"
    assert result["processes"]["server"]["fds"]["flat"] is False
    assert result["processes"]["server"]["rss_kib"]["flat"] is True


def test_shrinking_beyond_tolerance_is_not_called_flat() -> None:
    result = flatness(_samples([100_000.0] * 30, [40.0] * 15 + [30.0] * 15),
                      warmup_s=50, window_s=60)
    assert result["processes"]["server"]["fds"]["growth_pct"] == -25.0
    assert result["verdict"] == "growing"


def test_warmup_samples_do_not_count() -> None:
    # Fast growth during the warm-up (caches filling), flat afterwards.
    rss = [50_000.0 + 5_000 * i for i in range(10)] + [100_000.0] * 30
    result = flatness(_samples(rss, [40.0] * 40), warmup_s=100, window_s=60)
    assert result["verdict"] == "flat"
    assert result["processes"]["server"]["rss_kib"]["first"] == 100_000.0


def test_too_short_a_run_is_inconclusive() -> None:
    result = flatness(_samples([100_000.0] * 6, [40.0] * 6), warmup_s=55, window_s=60)
    assert result["verdict"] == "inconclusive"
    assert result["processes"]["server"]["rss_kib"]["growth_pct"] is None


def test_idle_start_and_end_are_kept_apart_from_the_windows() -> None:
    result = flatness(_samples([100_000.0] * 30, [40.0] * 30), warmup_s=50, window_s=60)
    idle = result["idle"]["server"]
    assert idle["rss_kib"] == {"start": 90_000, "end": 95_000}
    assert idle["fds"] == {"start": 20, "end": 21}
    # The idle samples are not in the churn series: churn samples at t = 50..300 s only.
    assert result["processes"]["server"]["rss_kib"]["samples"] == 26
    churn = [s for s in _samples([1.0] * 30, [1.0] * 30) if s["phase"] == "churn"]
    assert growth(churn, "server", "rss_kib", 50, 60)["samples"] == 26


def test_a_respawned_process_is_reported() -> None:
    pids = [1] * 15 + [2] * 15
    result = flatness(_samples([100_000.0] * 30, [40.0] * 30, pids=pids),
                      warmup_s=50, window_s=60)
    assert result["processes"]["server"]["restarted"] is True
    assert result["processes"]["server"]["pids"] == [1, 2]


def test_default_window() -> None:
    assert default_window_s(1800, 300) == 120.0
    assert default_window_s(120, 30) == 22.5
    assert default_window_s(40, 35) == 10.0
