"""WebRTC probe: one painted publisher, viewers added in steps, server CPU sampled per step.

It answers two questions from the outside, as a user would see them: how much server CPU does
one more WebRTC viewer cost (marginal CPU from /proc/PID/stat over each step's window), and what
glass-to-glass latency do viewers get (painted capture time vs decode time, same machine clock).
The load generator shares the machine with the server, so its own CPU and the machine's total
are reported too: when the machine is saturated the server numbers are not trustworthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from loadtest.clients import Publisher, Viewer, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPORT_DIR = Path(__file__).resolve().parent / "reports"
CONNECT_TIMEOUT_S = 15.0
JOIN_CONCURRENCY = 8
MAX_PROCS_SCANNED = 100_000


@dataclass
class ProbeConfig:
    """Everything the probe needs; tokens are minted from `secret` unless given."""

    url: str
    room: str = "probe"
    secret: str = ""
    viewers: int = 20
    decoders: int = 5
    duration: float = 20.0  # seconds of CPU measurement, split evenly over the steps
    settle: float = 2.0  # seconds after a step's viewers connect before its window starts
    bitrate: int = 600_000
    server_pids: list[int] = field(default_factory=list)
    publish_token: str = ""
    view_token: str = ""
    report: str = ""


def mint_token(secret: str, room: str, identity: str, grants: list[str], ttl: int) -> str:
    """HS256 token with the public claim set (loadtest never imports the server's code)."""
    now = int(time.time())
    claims = {"sub": identity, "room": room, "grants": grants, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, secret, algorithm="HS256")


# ---- CPU accounting from /proc -------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onward), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants (server worker processes count as the server)."""
    children: dict[int, list[int]] = {}
    for n, entry in enumerate(Path("/proc").iterdir()):
        if n > MAX_PROCS_SCANNED:
            break
        if entry.name.isdigit() and (f := _stat_fields(int(entry.name))):
            children.setdefault(int(f[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = list(roots)
    while todo and len(out) < MAX_PROCS_SCANNED:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime+stime per live pid, in clock ticks."""
    out = {}
    for pid in pids:
        if (f := _stat_fields(pid)) is not None:
            out[pid] = int(f[11]) + int(f[12])
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class CpuWindow:
    """CPU% (100 = one core) of the server tree, this process and the machine over a window."""

    def __init__(self, server_roots: list[int]) -> None:
        self.roots = server_roots
        self.pids = process_tree(server_roots) if server_roots else []
        self.t0 = time.monotonic()
        self.server0 = cpu_ticks(self.pids)
        self.self0 = cpu_ticks([os.getpid()])
        self.machine0 = machine_ticks()

    def result(self) -> dict[str, float | None]:
        wall = max(1e-6, time.monotonic() - self.t0)
        pids = process_tree(self.roots) if self.roots else []
        server1 = cpu_ticks(pids)
        server = sum(t - self.server0.get(p, 0) for p, t in server1.items())
        own = sum(cpu_ticks([os.getpid()]).values()) - sum(self.self0.values())
        busy1, total1 = machine_ticks()
        busy = (busy1 - self.machine0[0]) / max(1, total1 - self.machine0[1])
        return {
            "window_s": round(wall, 3),
            "server_cpu_pct": round(100 * server / CLK_TCK / wall, 2) if self.roots else None,
            "loadgen_cpu_pct": round(100 * own / CLK_TCK / wall, 2),
            "machine_busy_pct": round(100 * busy, 2),
            "server_processes": len(server1),
        }


def listening_pids(port: int) -> list[int]:
    """Pids with a TCP socket listening on `port` (via /proc/net/tcp* inodes and /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    pids = []
    for n, entry in enumerate(Path("/proc").iterdir()):
        if n > MAX_PROCS_SCANNED or not inodes:
            break
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
    # Keep the top of each tree: a worker whose parent also listens is counted via the parent.
    return sorted(p for p in pids if (f := _stat_fields(p)) is None or int(f[1]) not in pids)


# ---- the probe -----------------------------------------------------------------------------


def percentiles(values: list[float], ps: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p}": float(ordered[min(len(ordered) - 1, len(ordered) * p // 100)]) for p in ps}
    out.update(n=len(ordered), max=float(ordered[-1]), mean=round(statistics.fmean(ordered), 2))
    return out


def _totals(viewers: list[Viewer]) -> tuple[int, int, int]:
    """(unique video bytes, unique packets, unrecovered lost packets) over viewers."""
    vbytes = sum(v.video.stream.bytes for v in viewers if v.video)
    unique = sum(b.stream.unique for v in viewers for b in (v.video, v.audio) if b)
    lost = sum(v.lost for v in viewers)
    return vbytes, unique, lost


async def _add_viewers(
    cfg: ProbeConfig, viewers: list[Viewer], target: int, errors: list[str]
) -> None:
    """Join viewers until there are `target`; the first `decoders` ones decode."""
    gate = asyncio.Semaphore(JOIN_CONCURRENCY)

    async def join(index: int) -> None:
        token = cfg.view_token or mint_token(
            cfg.secret, cfg.room, f"probe-viewer-{index}", ["subscribe"], int(cfg.duration) + 900
        )
        async with gate:
            try:
                v = await asyncio.wait_for(
                    play(cfg.url, cfg.room, token, decode=index < cfg.decoders), CONNECT_TIMEOUT_S
                )
            except Exception as exc:  # report every failure, keep probing with the others
                errors.append(f"viewer {index}: {type(exc).__name__}: {exc}")
                return
            viewers.append(v)
            if not await v.wait_connected(CONNECT_TIMEOUT_S):
                errors.append(f"viewer {index}: ICE/DTLS did not connect")

    await asyncio.gather(*(join(i) for i in range(len(viewers), target)))


async def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Run the steps and return the report (also written as JSON by the CLI)."""
    errors: list[str] = []
    steps = sorted({0, cfg.viewers // 2, cfg.viewers})
    window = cfg.duration / len(steps)
    token = cfg.publish_token or mint_token(
        cfg.secret, cfg.room, "probe-anchor", ["publish"], int(cfg.duration) + 900
    )
    pub: Publisher = await publish(
        cfg.url, cfg.room, token, PaintedVideoTrack(), ToneAudioTrack(), video_bitrate=cfg.bitrate
    )
    viewers: list[Viewer] = []
    results: list[dict[str, Any]] = []
    measured_from: float | None = None
    try:
        if not await pub.wait_connected(CONNECT_TIMEOUT_S):
            raise RuntimeError("publisher did not connect (ICE/DTLS)")
        await asyncio.sleep(cfg.settle)
        for count in steps:
            await _add_viewers(cfg, viewers, count, errors)
            await asyncio.sleep(cfg.settle if count else 0)
            if measured_from is None and count:
                measured_from = time.monotonic()
            cpu = CpuWindow(cfg.server_pids)
            before = _totals(viewers)
            await asyncio.sleep(window)
            after = _totals(viewers)
            row: dict[str, Any] = {"viewers": count, "joined": len(viewers)}
            row["connected"] = sum(1 for v in viewers if v.connected_at and not v.failed)
            row.update(cpu.result())
            secs = row["window_s"]
            row["video_kbps_per_viewer"] = (
                round((after[0] - before[0]) * 8 / secs / 1000 / len(viewers), 1)
                if viewers
                else None
            )
            got, lost = after[1] - before[1], after[2] - before[2]
            row["loss_pct"] = round(100 * lost / max(1, got + lost), 3) if viewers else None
            results.append(row)
            print_row(row, first=not results[:-1])
        stats = [v.stats() for v in viewers]
        publisher = {
            "connected_s": round((pub.connected_at or pub.started_at) - pub.started_at, 4),
            "last_remb_bps": getattr(pub.video_encoder, "last_remb", None),
        }
        for report in (await pub.pc.getStats()).values():
            if report.type == "outbound-rtp":
                publisher[f"{report.kind}_packets_sent"] = report.packetsSent
                publisher[f"{report.kind}_bytes_sent"] = report.bytesSent
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await pub.close()
    return summarize(cfg, results, viewers, stats, publisher, errors, measured_from)


def summarize(
    cfg: ProbeConfig,
    steps: list[dict[str, Any]],
    viewers: list[Viewer],
    stats: list[dict[str, Any]],
    publisher: dict[str, Any],
    errors: list[str],
    measured_from: float | None,
) -> dict[str, Any]:
    """Marginal CPU per viewer, pooled latency (after settling), first-frame times, frames."""
    marginal = None
    if len(steps) > 1 and steps[0]["server_cpu_pct"] is not None:
        d_cpu = steps[-1]["server_cpu_pct"] - steps[0]["server_cpu_pct"]
        d_n = steps[-1]["connected"] - steps[0]["connected"]
        marginal = round(d_cpu / d_n, 3) if d_n else None
    decoders = [v for v in viewers if v.decode]
    latencies = [
        float(ms)
        for v in decoders
        for ms, at in zip(v.latencies_ms, v.latency_at, strict=True)
        if measured_from is None or at >= measured_from
    ]
    warnings = []
    if any(s["machine_busy_pct"] > 90 for s in steps):
        warnings.append("machine CPU > 90%: server numbers are limited by the machine")
    if not cfg.server_pids:
        warnings.append("no server pid: server CPU not measured")
    ttff = [v.first_frame_at - v.started_at for v in viewers if v.first_frame_at is not None]
    report = {
        "config": {k: v for k, v in asdict(cfg).items() if "token" not in k and k != "secret"},
        "steps": steps,
        "marginal_server_cpu_pct_per_viewer": marginal,
        "latency_ms": percentiles(latencies),
        "first_frame_s": percentiles([round(t, 4) for t in ttff]),
        "decoded_frames_per_decoder": [v.frames for v in decoders],
        "frames_per_counter": [v.frames for v in viewers if not v.decode],
        "starts_with_keyframe": sum(
            1 for s in stats if s.get("video", {}).get("starts_with_keyframe")
        ),
        "publisher": publisher,
        "viewers": stats,
        "errors": errors,
        "warnings": warnings,
    }
    return report


def print_row(row: dict[str, Any], first: bool) -> None:
    if first:
        print(
            f"{'viewers':>7} {'connected':>9} {'server%':>8} {'loadgen%':>8} {'machine%':>8}"
            f" {'kbps/viewer':>11} {'loss%':>6} {'window_s':>8}",
            flush=True,
        )
    print(
        f"{row['viewers']:>7} {row['connected']:>9} {_fmt(row['server_cpu_pct']):>8}"
        f" {_fmt(row['loadgen_cpu_pct']):>8} {_fmt(row['machine_busy_pct']):>8}"
        f" {_fmt(row['video_kbps_per_viewer']):>11} {_fmt(row['loss_pct']):>6}"
        f" {row['window_s']:>8}",
        flush=True,
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_summary(report: dict[str, Any]) -> None:
    print(f"marginal server CPU per viewer: {_fmt(report['marginal_server_cpu_pct_per_viewer'])} %")
    lat, ff = report["latency_ms"], report["first_frame_s"]
    if lat:
        print(
            f"glass-to-glass latency ms (n={lat['n']}): p50 {lat['p50']:.0f}  p95 {lat['p95']:.0f}"
            f"  p99 {lat['p99']:.0f}  max {lat['max']:.0f}"
        )
    if ff:
        print(f"time to first frame s: p50 {ff['p50']:.3f}  max {ff['max']:.3f}")
    print(f"frames per decoder: {report['decoded_frames_per_decoder']}")
    counters = report["frames_per_counter"]
    if counters:
        print(f"frames per counting viewer: min {min(counters)} max {max(counters)}")
    print(
        f"viewers starting at a keyframe: {report['starts_with_keyframe']}/{len(report['viewers'])}"
    )
    for line in report["warnings"] + report["errors"][:20]:
        print(f"! {line}")


def resolve_server_pids(url: str, given: list[int]) -> list[int]:
    """The --server-pid values, or whoever listens on the URL's port, or [] (said aloud)."""
    if given:
        return given
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pids = listening_pids(port)
    if pids:
        print(f"server pid(s) listening on port {port}: {pids}")
    else:
        print(f"cannot find the process listening on port {port}; server CPU will not be measured")
    return pids


def write_report(report: dict[str, Any], path: str) -> Path:
    out = Path(path) if path else REPORT_DIR / time.strftime("webrtc-probe-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return out
