"""Fast checks of the load suite's pure parts: sequence accounting, percentiles, step rows,
the fit and the report schema. No network, no aiortc peers: milliseconds."""

from __future__ import annotations

import struct

import pytest

from loadtest.counters import StreamCounter
from loadtest.floor import floor_for_mix
from loadtest.rawcount import _payload_size
from loadtest.stats import linear_slope, percentiles, window_loss
from loadtest.webrtc_report import ROW_FIELDS, check_report, fit, packet_mix, ratios, step_row


def feed(counter: StreamCounter, seqs: list[int]) -> None:
    for s in seqs:
        counter.add_seq(s & 0xFFFF, 100, 0, 1.0)


def test_sequence_wrap_without_loss() -> None:
    c = StreamCounter()
    feed(c, list(range(65530, 65536)) + list(range(0, 10)))
    assert (c.packets, c.unique, c.expected, c.lost, c.gaps) == (16, 16, 16, 0, 0)


def test_sequence_loss_across_wrap_then_late_and_duplicate() -> None:
    c = StreamCounter()
    feed(c, [65533, 65534, 1, 2])  # 65535 and 0 missing
    assert (c.expected, c.lost, c.gaps) == (6, 2, 1)
    feed(c, [0])  # a late arrival (reorder or retransmission) recovers one
    assert (c.lost, c.late) == (1, 1)
    feed(c, [0])  # the same packet again is a duplicate, not a recovery
    assert (c.duplicates, c.lost) == (1, 1)


def test_window_loss_counts_only_the_window() -> None:
    c = StreamCounter()
    feed(c, range(0, 100))
    before = c.snapshot()
    feed(c, [x for x in range(100, 200) if x not in (150, 151, 152)])
    assert window_loss(before, c.snapshot()) == (97, 97, 3)
    assert window_loss((0, 0, 0), (10, 10, 10)) == (10, 10, 0)


def test_payload_size_from_srtp_header() -> None:
    ext = b"\xbe\xde\x00\x02" + b"\x00" * 8  # one-byte extension header, two words
    data = struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + ext + b"p" * 1000 + b"t" * 16
    assert _payload_size(data, 16) == 1000
    plain = struct.pack("!BBHII", 0x80, 96, 1, 2, 3) + b"p" * 50 + b"t" * 10
    assert _payload_size(plain, 10) == 50


def test_percentiles_nearest_rank() -> None:
    p = percentiles([float(x) for x in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["n"]) == (51.0, 96.0, 100.0, 100.0, 100)
    assert percentiles([]) == {}


def test_linear_slope() -> None:
    assert linear_slope([0, 50, 100], [10, 20, 30]) == pytest.approx(0.2)
    assert linear_slope([5, 5], [1, 2]) is None


def _row(step: int, v: int, a: int, ttff: float | None = 0.3) -> list[object]:
    # ROW_FIELDS: step, connected, v p/u/e, a p/u/e, v_bytes, a_bytes, frames, ttff_s
    return [step, 1, v, v, v, a, a, a, v * 1000, a * 100, v // 2, ttff]


def test_step_row_marginal_cost_and_loss() -> None:
    assert len(_row(0, 0, 0)) == len(ROW_FIELDS)
    before = [_row(10, 0, 0), _row(10, 0, 0)]
    after = [_row(10, 600, 500), _row(10, 600, 500)]
    after[1][4] = 610  # second viewer expected 10 more video packets than it got
    cpu = {"window_s": 10.0, "server_cpu_pct": 12.0, "machine_busy_pct": 50.0,
           "counters_cpu_pct": 1.0}
    row = step_row(10, 10.0, cpu, before, after, [True, False], [40, 60, 80], idle_cpu_pct=10.0)
    assert row["forwarded_packets"] == 2200
    assert row["marginal_cpu_pct_per_viewer"] == pytest.approx(0.2)
    assert row["us_per_forwarded_packet"] == pytest.approx(1e6 * 0.02 * 10 / 2200, abs=0.01)
    assert row["lost_packets"] == 10 and row["viewers_with_loss"] == 1
    assert row["latency_ms"]["p50"] == 60.0
    assert row["ttff_decoded_s"]["n"] == 1 and row["ttff_s"]["n"] == 2
    assert row["loadgen_cpu_pct_per_counting_viewer"] == pytest.approx(1.0)


def _report() -> dict[str, object]:
    cpu = {"window_s": 10.0, "machine_busy_pct": 40.0}
    steps = []
    for n, server in ((0, 5.0), (10, 7.0), (20, 9.0)):
        rows = [_row(n, 1000, 500) for _ in range(n)]
        zero = [_row(n, 0, 0) for _ in range(n)]
        steps.append(step_row(n, 10.0, cpu | {"server_cpu_pct": server}, zero, rows,
                              [False] * n, [], 5.0))
    run = {"label": "shopcast", "steps": steps, "fit": fit(steps), "viewers": []}
    floor = {"rows": [{"profile": "P", "size": 100, "protect_sendto_us": 5.0},
                      {"profile": "P", "size": 1100, "protect_sendto_us": 7.0}]}
    return {"schema": "x", "machine": {}, "config": {}, "floor": floor, "shopcast": run,
            "ratios": ratios(run["fit"], 6.0, {"us_per_forwarded_packet": 1000.0}),
            "errors": [], "warnings": []}


def test_fit_ratios_and_schema() -> None:
    report = _report()
    f = report["shopcast"]["fit"]  # type: ignore[index]
    assert f["cpu_pct_per_viewer"] == pytest.approx(0.2)
    assert f["viewers_per_core"] == 500
    # 0.02 core per viewer over 150 packets/s per viewer
    assert f["us_per_forwarded_packet"] == pytest.approx(1e6 * 0.002 / 150, abs=0.01)
    r = report["ratios"]
    assert r["vs_floor"] == pytest.approx(f["us_per_forwarded_packet"] / 6.0, abs=0.01)  # type: ignore[index]
    assert check_report(report) == []
    del report["shopcast"]["steps"][1]["loss_pct"]  # type: ignore[index]
    assert check_report(report) == ["shopcast.steps[1].loss_pct"]


def test_floor_for_packet_mix() -> None:
    report = _report()
    mix = packet_mix(report["shopcast"]["steps"])  # type: ignore[index]
    assert sum(mix.values()) == (1000 + 500) * (10 + 20)  # viewers of both steps
    floor = report["floor"]
    assert floor_for_mix(floor, "P", {100: 1.0, 1100: 1.0}) == pytest.approx(6.0)  # type: ignore[arg-type]
    assert floor_for_mix(floor, "P", {600: 1.0}) == pytest.approx(6.0)  # type: ignore[arg-type]
    assert floor_for_mix(floor, "other", {600: 1.0}) is None  # type: ignore[arg-type]


def test_parsed_packet_path_marks_keyframe_start() -> None:
    from aiortc.rtp import RtpPacket

    c = StreamCounter()
    c.add(RtpPacket(payload_type=96, sequence_number=7, payload=b"\x65" * 10), 2.0, True)
    c.add(RtpPacket(payload_type=96, sequence_number=8, marker=1, payload=b"x"), 2.1, False)
    assert (c.starts_with_keyframe, c.first_keyframe_at, c.first_at) == (True, 2.0, 2.0)
    assert (c.frames, c.bytes, c.unique) == (1, 11, 2)


def test_cohost_reads_the_mixer_metric_of_its_room() -> None:
    from loadtest.cohost import MIXER_METRIC

    text = ('shopcast_flv_mixer_cpu_seconds_total{room="other"} 9.5\n'
            'shopcast_flv_mixer_cpu_seconds_total{room="bench"} 1.25\n')
    found = {m["room"]: float(m["v"]) for m in MIXER_METRIC.finditer(text)}
    assert found == {"other": 9.5, "bench": 1.25}


async def test_path_bench_measures_floor_and_forwarding_path() -> None:
    """Smoke run (tiny, untimed): both measurements happen and every datagram is accounted."""
    from benchmarks.path import run

    report = await run(viewers=4, packets=64, size=300)
    assert report["floor_us"] > 0 and report["path_us"] > 0
    assert len(report["runs"]["floor"]) == len(report["runs"]["path"]) == 3


def test_paced_floor_sends_every_round_to_every_receiver() -> None:
    """Smoke run (tiny, untimed): 6 viewers over 2 sleeping receiver processes, all delivered,
    and the webrtc report's ratio against it."""
    from loadtest.paced_floor import measure_paced

    row = measure_paced(6, 300, "AEAD_AES_256_GCM", receivers=2, rate=100.0, seconds=0.2)
    assert row["packets"] == 6 * 20 and row["received"] == row["packets"]
    assert row["protect_sendto_us"] >= 0  # CPU ticks are 10 ms: a run this small may read 0
    r = ratios({"us_per_forwarded_packet": 12.0}, 6.0, None, 10.0)
    assert (r["vs_floor"], r["vs_paced_floor"]) == (2.0, 1.2)
