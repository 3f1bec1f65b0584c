"""Turning the webrtc scenario's raw snapshots into figures: pure functions, tested offline.

Per step the scenario hands over two snapshots of every viewer's counters (window start and
end) and a CPU window; `step_row` makes one table row of them. `summarize` fits the marginal
cost over all steps (least squares, so one noisy step does not decide the headline) and puts
it beside the floor and the baseline measured in the same run.
"""

from __future__ import annotations

from typing import Any

from loadtest.stats import linear_slope, percentiles, window_loss

SCHEMA = "shopcast.loadtest.webrtc/1"
# Layout of one viewer row in a viewer process snapshot (loadtest.viewer_proc.Fleet.snap).
ROW_FIELDS = ("step", "connected", "v_packets", "v_unique", "v_expected",
              "a_packets", "a_unique", "a_expected", "v_bytes", "a_bytes", "frames", "ttff_s")
HEADER_BYTES = 12 + 8 + 16  # RTP header, typical extensions, SRTP tag: payload -> wire size
BUSY_LIMIT_PCT = 95.0  # above this the machine, not the server, may set the pace
STARVED_SHARE = 0.5  # a step whose viewers get less than this share of the best rate is starved


def step_row(viewers: int, window: float, cpu: dict[str, Any], before: list[list[Any]],
             after: list[list[Any]], decoding: list[bool], latencies: list[int],
             idle_cpu_pct: float | None) -> dict[str, Any]:
    """One step: rates and loss per viewer, marginal server CPU, cost per forwarded packet.

    `before`/`after` are the viewer rows (ROW_FIELDS) at window start and end, same order;
    `decoding` says which rows decode; `idle_cpu_pct` is the server at 0 viewers.
    """
    i = {name: n for n, name in enumerate(ROW_FIELDS)}
    pps, losses, received, lost, unique = [], [], 0, 0, 0
    vbytes = abytes = vpk = apk = frames = 0
    for b, a in zip(before, after, strict=True):
        vr, vu, vl = window_loss(b[2:5], a[2:5])
        ar, au, al = window_loss(b[5:8], a[5:8])
        received += vr + ar
        unique += vu + au
        lost += vl + al
        pps.append((vr + ar) / window)
        losses.append(100.0 * (vl + al) / max(1, vu + au + vl + al))
        vbytes += a[i["v_bytes"]] - b[i["v_bytes"]]
        abytes += a[i["a_bytes"]] - b[i["a_bytes"]]
        vpk, apk = vpk + vr, apk + ar
        frames += a[i["frames"]] - b[i["frames"]]
    n = len(after)
    this_step = [r for r in after if r[i["step"]] == viewers]
    ttff = [r[i["ttff_s"]] for r in this_step if r[i["ttff_s"]] is not None]
    ttff_dec = [r[i["ttff_s"]] for r, d in zip(after, decoding, strict=True)
                if d and r[i["step"]] == viewers and r[i["ttff_s"]] is not None]
    server = cpu.get("server_cpu_pct")
    row: dict[str, Any] = {
        "viewers": viewers,
        "connected": sum(r[i["connected"]] for r in after),
        "decoders": sum(decoding),
        **cpu,
        "marginal_cpu_pct_per_viewer": None,
        "us_per_forwarded_packet": None,
        "forwarded_packets": received,
        "packets_per_s_per_viewer": percentiles(pps, (0, 50)) if pps else {},
        "video_kbps_per_viewer": round(vbytes * 8 / window / 1000 / n, 1) if n else None,
        "fps_per_viewer": round(frames / window / n, 1) if n else None,
        "loss_pct": round(100.0 * lost / max(1, unique + lost), 4) if n else None,
        "lost_packets": lost,
        "viewers_with_loss": sum(1 for x in losses if x > 0),
        "latency_ms": percentiles([float(x) for x in latencies]),
        "ttff_s": percentiles(ttff),
        "ttff_decoded_s": percentiles(ttff_dec),
        "packet_mix": {
            "video": [vpk, round(vbytes / vpk) + HEADER_BYTES if vpk else None],
            "audio": [apk, round(abytes / apk) + HEADER_BYTES if apk else None],
        },
    }
    if server is not None and idle_cpu_pct is not None and viewers:
        row["marginal_cpu_pct_per_viewer"] = round((server - idle_cpu_pct) / viewers, 4)
        if received:
            extra_s = (server - idle_cpu_pct) / 100 * window
            row["us_per_forwarded_packet"] = round(1e6 * extra_s / received, 2)
    counters = row.get("counters_cpu_pct")
    if counters is not None and n - row["decoders"] > 0:
        row["loadgen_cpu_pct_per_counting_viewer"] = round(counters / (n - row["decoders"]), 4)
    return row


def fit(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Least-squares marginal server CPU per viewer and per forwarded packet.

    CPU time consumed stays a measure of work on a busy machine (contention inflates it a
    little; steps above BUSY_LIMIT_PCT are listed so the reader can judge). Per packet, every
    step that forwarded anything counts; per viewer, only steps whose viewers got at least
    STARVED_SHARE of the best step's packet rate (a server that has fallen behind forwards less,
    so its CPU per viewer would look cheap).
    """
    measured = [s for s in steps if s.get("server_cpu_pct") is not None]
    best = max(((s.get("packets_per_s_per_viewer") or {}).get("p50", 0) for s in measured),
               default=0)
    fed = [s for s in measured if not s["viewers"] or
           (s.get("packets_per_s_per_viewer") or {}).get("p50", 0) >= STARVED_SHARE * best]
    forwarded = [s for s in measured if not s["viewers"] or s["forwarded_packets"]]
    out: dict[str, Any] = {
        "steps_used": [s["viewers"] for s in fed],
        "steps_used_per_packet": [s["viewers"] for s in forwarded],
        "busy_steps": [s["viewers"] for s in measured
                       if s.get("machine_busy_pct", 0) > BUSY_LIMIT_PCT],
    }
    per_viewer = linear_slope([s["connected"] for s in fed], [s["server_cpu_pct"] for s in fed])
    rate = [s["forwarded_packets"] / s["window_s"] for s in forwarded]
    per_packet = linear_slope(rate, [s["server_cpu_pct"] / 100 for s in forwarded])
    out["cpu_pct_per_viewer"] = None if per_viewer is None else round(per_viewer, 4)
    out["viewers_per_core"] = round(100 / per_viewer) if per_viewer and per_viewer > 0 else None
    out["us_per_forwarded_packet"] = None if per_packet is None else round(1e6 * per_packet, 2)
    return out


def refit(report: dict[str, Any]) -> dict[str, Any]:
    """Recompute fits and ratios of a saved report (after a change in how they are fitted)."""
    for part in ("shopcast", "baseline"):
        if report.get(part):
            report[part]["fit"] = fit(report[part]["steps"])
    base = report.get("baseline")
    report["ratios"] = ratios(report["shopcast"]["fit"], report["floor"].get("mix_us"),
                              base["fit"] if base else None, report["floor"].get("paced_mix_us"))
    return report


def packet_mix(steps: list[dict[str, Any]]) -> dict[int, float]:
    """{wire size: packets} of what viewers received over all steps (weights for the floor)."""
    mix: dict[int, float] = {}
    for s in steps:
        for count, size in s.get("packet_mix", {}).values():
            if count and size:
                mix[size] = mix.get(size, 0) + count
    return mix


def ratios(ours: dict[str, Any], floor_us: float | None, baseline: dict[str, Any] | None,
           paced_floor_us: float | None = None) -> dict[str, float | None]:
    """ShopCast's marginal cost per forwarded packet against the floor (bulk sends, and at the
    viewers' packet rate to sleeping receivers: loadtest.paced_floor) and the baseline."""
    us = ours.get("us_per_forwarded_packet")
    base = (baseline or {}).get("us_per_forwarded_packet")
    return {
        "shopcast_us_per_packet": us,
        "floor_us_per_packet": floor_us,
        "baseline_us_per_packet": base,
        "vs_floor": round(us / floor_us, 2) if us and floor_us else None,
        "paced_floor_us_per_packet": paced_floor_us,
        "vs_paced_floor": round(us / paced_floor_us, 2) if us and paced_floor_us else None,
        "vs_baseline": round(us / base, 4) if us and base else None,
    }


REQUIRED = {
    "": ("schema", "machine", "config", "floor", "shopcast", "ratios", "errors", "warnings"),
    "shopcast": ("label", "steps", "fit", "viewers"),
    "step": ("viewers", "connected", "window_s", "server_cpu_pct", "machine_busy_pct",
             "marginal_cpu_pct_per_viewer", "us_per_forwarded_packet", "loss_pct",
             "latency_ms", "ttff_s", "packets_per_s_per_viewer"),
}


def check_report(report: dict[str, Any]) -> list[str]:
    """Missing keys of the report's schema (empty when it is complete)."""
    missing = [k for k in REQUIRED[""] if k not in report]
    for part in ("shopcast", "baseline"):
        run = report.get(part)
        if not run:
            continue
        missing += [f"{part}.{k}" for k in REQUIRED["shopcast"] if k not in run]
        for n, step in enumerate(run.get("steps", [])):
            missing += [f"{part}.steps[{n}].{k}" for k in REQUIRED["step"] if k not in step]
    return missing


# Columns: N, connected, server CPU %, marginal server CPU % per viewer, server us per forwarded
# packet, load-generator CPU % per counting viewer, packets/s per viewer (median), loss %,
# latency ms p50/95/99, time to first frame s p50/95, machine busy %, server run-queue wait %.


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = ("N", "conn", "srv%", "marg%/v", "us/pkt", "lg%/v", "pps/v", "loss%", "lat50",
           "lat95", "lat99", "ttff50", "ttff95", "mach%", "wait%")


def table_line(s: dict[str, Any]) -> str:
    lat, ttff = s.get("latency_ms") or {}, s.get("ttff_s") or {}
    cells = (s["viewers"], s["connected"], _f(s["server_cpu_pct"]),
             _f(s["marginal_cpu_pct_per_viewer"], 3), _f(s["us_per_forwarded_packet"]),
             _f(s.get("loadgen_cpu_pct_per_counting_viewer"), 3),
             _f((s.get("packets_per_s_per_viewer") or {}).get("p50"), 0), _f(s["loss_pct"], 3),
             _f(lat.get("p50"), 0), _f(lat.get("p95"), 0), _f(lat.get("p99"), 0),
             _f(ttff.get("p50"), 3), _f(ttff.get("p95"), 3), _f(s["machine_busy_pct"], 0),
             _f(s.get("server_wait_pct"), 0))
    return " ".join(f"{c!s:>7}" for c in cells)


def print_summary(report: dict[str, Any]) -> None:
    """The table a human reads: one block per server, then the fit and the ratios."""
    for part in ("shopcast", "baseline"):
        run = report.get(part)
        if not run:
            continue
        print(f"\n== {run['label']} ({run.get('url', '')})")
        print(" ".join(f"{c:>7}" for c in COLUMNS))
        for s in run["steps"]:
            print(table_line(s))
        f = run["fit"]
        print(f"fit: {_f(f['cpu_pct_per_viewer'], 3)} % of a core per viewer"
              f" (~{f['viewers_per_core']} viewers/core; N={f['steps_used']}),"
              f" {_f(f['us_per_forwarded_packet'], 2)} us per forwarded packet"
              f" (N={f.get('steps_used_per_packet')})")
    r = report["ratios"]
    print(f"\nfloor (SRTP protect + sendto, this run): {_f(r['floor_us_per_packet'], 2)} us/packet;"
          f" ShopCast {_f(r['shopcast_us_per_packet'], 2)} us = {_f(r['vs_floor'], 2)}x floor,"
          f" {_f(r['vs_baseline'], 4)}x MediaRelay ({_f(r['baseline_us_per_packet'], 1)} us)")
    if r.get("paced_floor_us_per_packet"):
        print(f"paced floor (same sends at the viewers' packet rate, sleeping receivers):"
              f" {_f(r['paced_floor_us_per_packet'], 2)} us/packet;"
              f" ShopCast = {_f(r['vs_paced_floor'], 2)}x")
    for line in report["warnings"] + report["errors"][:20]:
        print(f"! {line}")


def plot(report: dict[str, Any], path: str) -> None:
    """PNG: marginal server CPU per viewer and glass-to-glass latency against N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for part, marker in (("shopcast", "o-"), ("baseline", "s--")):
        run = report.get(part)
        if not run:
            continue
        pts = [(s["viewers"], s["marginal_cpu_pct_per_viewer"]) for s in run["steps"]
               if s["marginal_cpu_pct_per_viewer"] is not None]
        if pts:
            ax1.plot(*zip(*pts, strict=True), marker, label=run["label"])
        if part == "shopcast":
            for p, style in (("p50", "o-"), ("p95", "^-"), ("p99", "v:")):
                lat = [(s["viewers"], s["latency_ms"][p]) for s in run["steps"]
                       if s["latency_ms"]]
                if lat:
                    ax2.plot(*zip(*lat, strict=True), style, label=f"{run['label']} {p}")
    ax1.axhline(0.2, color="grey", lw=0.8, ls=":", label="target 0.2 %")
    ax1.set(xlabel="viewers N", ylabel="server CPU % of one core per viewer", yscale="log",
            title="marginal server CPU per viewer")
    ax2.set(xlabel="viewers N", ylabel="ms", title="glass-to-glass latency (decoding sample)")
    for ax in (ax1, ax2):
        ax.set_xscale("log")  # baseline (N <= 10) and ShopCast (N up to hundreds) on one axis
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
