"""The ``webrtc`` scenario: one painted publisher, N viewers over K load-generator processes.

Steps of N viewers (0 first: the server with the publisher alone), each with a settle pause and
a measurement window. Counting viewers live in K processes (loadtest.viewer_proc, raw-datagram
counting by default) and a separate process holds the decoding sample, so the load generator's
cost per counting viewer is measured cleanly and decoding never steals the counters' core time.
Server CPU is the whole process tree of whoever listens on the URL's port (worker processes
included). The same run measures the floor (loadtest.floor) first and, with
``--baseline mediarelay``, a naive MediaRelay server last, so the ratios compare like with like.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtest.clients import publish
from loadtest.floor import floor_for_mix, print_floor, run_floor
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.paced_floor import print_paced_floor, run_paced_floor
from loadtest.procstat import CpuWindow
from loadtest.stats import mint_token
from loadtest.webrtc_report import SCHEMA, fit, packet_mix, ratios, step_row, table_line

CONNECT_TIMEOUT_S = 15.0
JOIN_TIMEOUT_BASE_S = 30.0
JOIN_TIMEOUT_PER_VIEWER_S = 0.6
REPLY_TIMEOUT_S = 60.0
START_TIMEOUT_S = 20.0
BASELINE_VIEWERS = (2, 5, 10)
LAG_TICK_S = 0.05


@dataclass
class WebrtcConfig:
    """One server's run; `viewers` are the step sizes (a 0 step is always measured first)."""

    url: str
    secret: str
    room: str = "loadtest"
    viewers: list[int] = field(default_factory=lambda: [50, 100, 200, 400])
    procs: int = 2
    decoders: int = 5
    step_seconds: float = 20.0
    settle: float = 5.0
    bitrate: int = 600_000
    mode: str = "raw"  # counting viewers: "raw" (header counting) or "full" (aiortc path)
    server_pids: list[int] = field(default_factory=list)
    label: str = "shopcast"
    stop_loss_pct: float = 5.0  # a step losing more ends the run: "as far as the machine holds"


class LoadProc:
    """A viewer process (loadtest.viewer_proc) driven over JSON lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, mode: str) -> None:
        self.proc, self.mode = proc, mode
        self.count = 0  # viewers given to it
        self.calls = 0  # commands sent; each carries its number as "id"

    @classmethod
    async def start(cls, cfg: WebrtcConfig, mode: str) -> LoadProc:
        env = dict(os.environ, LOADTEST_SECRET=cfg.secret)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.viewer_proc", "--url", cfg.url, "--room", cfg.room,
            "--mode", mode, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=env, limit=1 << 24)
        lp = cls(proc, mode)
        await lp.read(START_TIMEOUT_S)
        return lp

    async def read(self, seconds: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), seconds)
        if not line:
            raise RuntimeError(f"viewer process {self.proc.pid} ({self.mode}) exited")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def call(self, cmd: dict[str, Any], seconds: float = REPLY_TIMEOUT_S) -> dict[str, Any]:
        """Send a command and wait for its reply; replies to earlier, timed-out commands that
        arrive meanwhile are skipped (matched by id)."""
        assert self.proc.stdin is not None
        self.calls += 1
        self.proc.stdin.write(json.dumps(cmd | {"id": self.calls}).encode() + b"\n")
        await self.proc.stdin.drain()
        deadline = time.monotonic() + seconds
        for _ in range(self.calls + 1):
            reply = await self.read(max(0.1, deadline - time.monotonic()))
            if reply.get("id") == self.calls:
                return reply
        raise RuntimeError(f"viewer process {self.proc.pid}: no reply to {cmd['op']}")

    async def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.proc.wait(), 10)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


async def _join(procs: list[LoadProc], decoder: LoadProc | None, cfg: WebrtcConfig,
                target: int, step: int, errors: list[str]) -> None:
    """Bring the viewer count up to `target`: the decoding sample first, then round robin."""
    have = sum(p.count for p in procs) + (decoder.count if decoder else 0)
    plan: dict[int, list[int]] = {}
    for index in range(have, target):
        if decoder is not None and decoder.count < cfg.decoders:
            chosen = decoder
        else:
            chosen = min(procs, key=lambda p: p.count)
        chosen.count += 1
        plan.setdefault(id(chosen), []).append(index)
    every = [*procs, *([decoder] if decoder else [])]
    calls = [p.call({"op": "join", "indices": plan[id(p)], "step": step},
                    JOIN_TIMEOUT_BASE_S + JOIN_TIMEOUT_PER_VIEWER_S * len(plan[id(p)]))
             for p in every if id(p) in plan]
    for reply in await asyncio.gather(*calls, return_exceptions=True):
        if isinstance(reply, BaseException):
            errors.append(f"join at N={step}: {type(reply).__name__}: {reply}")
        else:
            errors.extend(reply.get("errors", []))


async def _loop_lag(seconds: float) -> float:
    """Worst event-loop lag (ms) of this process, the publisher's, over `seconds`: if our own
    loop stalls, the publisher's ICE consent answers stall too and the server may drop it."""
    worst = 0.0
    for _ in range(int(seconds / LAG_TICK_S)):
        t = time.monotonic()
        await asyncio.sleep(LAG_TICK_S)
        worst = max(worst, time.monotonic() - t - LAG_TICK_S)
    return round(1000 * worst, 1)


async def run_server(cfg: WebrtcConfig, errors: list[str]) -> dict[str, Any]:
    """Every step against one server; the run's section of the report."""
    procs = [await LoadProc.start(cfg, cfg.mode) for _ in range(max(1, cfg.procs))]
    decoder = await LoadProc.start(cfg, "decode") if cfg.decoders > 0 else None
    every = [*procs, *([decoder] if decoder else [])]
    groups = {"publisher": [os.getpid()], "counters": [p.proc.pid for p in procs]}
    if decoder is not None:
        groups["decoders"] = [decoder.proc.pid]
    token = mint_token(cfg.secret, cfg.room, "lt-publisher", ["publish"], 4 * 3600)
    pub = await publish(cfg.url, cfg.room, token, PaintedVideoTrack(), ToneAudioTrack(),
                        video_bitrate=cfg.bitrate)
    steps: list[dict[str, Any]] = []
    final: list[dict[str, Any]] = []
    t0 = time.monotonic()
    states: list[tuple[float, str, str]] = []
    step_started: dict[int, float] = {}  # the publisher's (time, ICE, connection) changes

    @pub.pc.on("connectionstatechange")
    @pub.pc.on("iceconnectionstatechange")
    def _on_state() -> None:
        if len(states) < 100:
            states.append((round(time.monotonic() - t0, 2), pub.pc.iceConnectionState,
                           pub.pc.connectionState))

    try:
        if not await pub.wait_connected(CONNECT_TIMEOUT_S):
            raise RuntimeError(f"publisher did not connect to {cfg.url}")
        await asyncio.sleep(cfg.settle)
        idle: float | None = None
        for n in [0, *sorted(set(cfg.viewers) - {0})]:
            step_started[n] = round(time.monotonic() - t0, 2)
            await _join(procs, decoder, cfg, n, n, errors)
            if n:
                await asyncio.sleep(cfg.settle)
            try:
                before = await asyncio.gather(*(p.call({"op": "snap"}) for p in every))
                cpu = CpuWindow(cfg.server_pids, groups)
                lag = asyncio.ensure_future(_loop_lag(cfg.step_seconds))
                await asyncio.sleep(cfg.step_seconds)
                after = await asyncio.gather(*(p.call({"op": "snap"}) for p in every))
            except (RuntimeError, TimeoutError) as exc:  # keep the steps measured so far
                errors.append(f"{cfg.label}: step N={n} lost: {type(exc).__name__}: {exc}")
                break
            window = cpu.result() | {"publisher_loop_lag_ms": await lag}
            rows0 = [r for s in before for r in s["viewers"]]
            rows1 = [r for s in after for r in s["viewers"]]
            decoding = [p.mode == "decode" for p, s in zip(every, after, strict=True)
                        for _ in s["viewers"]]
            lat = [x for s in after for x in s["latencies_ms"]]
            row = step_row(n, float(window["window_s"] or 1), window, rows0, rows1, decoding,
                           lat, idle)
            if n == 0:
                idle = row["server_cpu_pct"]
            steps.append(row)
            print(table_line(row), flush=True)
            if pub.pc.connectionState != "connected" or (
                cfg.server_pids and not window["server_processes"]
            ):
                errors.append(f"{cfg.label}: publisher or server gone after N={n}: steps stopped")
                break
            if n and (row["loss_pct"] or 0) > cfg.stop_loss_pct:
                errors.append(f"{cfg.label}: {row['loss_pct']}% loss at N={n}: the machine holds"
                              " no more, steps stopped")
                break
        for reply in await asyncio.gather(*(p.call({"op": "close"}, 60) for p in every),
                                          return_exceptions=True):
            if isinstance(reply, dict):
                final.extend(reply["viewers"])
    finally:
        await pub.close()
        await asyncio.gather(*(p.stop() for p in every), return_exceptions=True)
    return {"label": cfg.label, "url": cfg.url, "mode": cfg.mode, "procs": len(procs),
            "steps": steps, "fit": fit(steps), "viewers": final, "publisher_states": states,
            "step_started_s": step_started}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_baseline(cfg: WebrtcConfig, viewers: list[int], errors: list[str]) -> dict[str, Any]:
    """Start the MediaRelay server on a free port, run the same scenario at small N, stop it."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.baselines.mediarelay_server", "--port", str(port),
        "--secret", cfg.secret, "--video-bitrate", str(cfg.bitrate))
    try:
        for _ in range(int(START_TIMEOUT_S * 10)):
            with contextlib.suppress(OSError):
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.1)
        base = dataclasses.replace(
            cfg, url=f"http://127.0.0.1:{port}", viewers=viewers, server_pids=[proc.pid],
            decoders=min(cfg.decoders, 2), procs=1, label="aiortc MediaRelay")
        return await run_server(base, errors)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()


def machine() -> dict[str, Any]:
    """What BENCHMARKS.md must say about where the figures came from."""
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
                 "?")
    versions = {}
    for dist in ("aiortc", "aioice", "pylibsrtp", "av", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "versions": versions,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


async def run_webrtc(cfg: WebrtcConfig, baseline: str, baseline_viewers: list[int],
                     floor_viewers: int, paced_floor_viewers: int = 0) -> dict[str, Any]:
    """Floor, then ShopCast's steps, then the baseline: one report with the ratios."""
    errors: list[str] = []
    warnings: list[str] = []
    floor = run_floor(viewers=floor_viewers, seconds=1.0) if floor_viewers else {"rows": []}
    if floor["rows"]:
        print_floor(floor)
    paced = run_paced_floor(paced_floor_viewers, receivers=cfg.procs) if paced_floor_viewers \
        else {"rows": []}
    if paced["rows"]:
        print_paced_floor(paced)
    ours = await run_server(cfg, errors)
    base = await run_baseline(cfg, baseline_viewers, errors) if baseline == "mediarelay" else None
    profiles = {v.get("srtp_profile") for v in ours["viewers"]} - {None}
    profile = profiles.pop() if len(profiles) == 1 else "AEAD_AES_256_GCM"
    mix = packet_mix(ours["steps"])
    floor_us = floor_for_mix(floor, profile, mix) if floor["rows"] else None
    paced_us = floor_for_mix(paced, paced["rows"][0]["profile"], mix) if paced["rows"] else None
    for run in filter(None, (ours, base)):
        busy = [s["viewers"] for s in run["steps"] if s["machine_busy_pct"] > 95]
        if busy:
            warnings.append(f"{run['label']}: machine > 95% busy at N={busy}: CPU figures there"
                            " may be inflated by contention")
        drops = sum(s.get("udp_RcvbufErrors", 0) for s in run["steps"])
        if drops:
            warnings.append(f"{run['label']}: {drops} UDP receive-buffer drops on this machine"
                            " (a starved receiver, often the load generator)")
    if not cfg.server_pids:
        warnings.append("no server pid: server CPU not measured")
    return {"schema": SCHEMA, "machine": machine(),
            "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "secret"}
            | {"baseline": baseline, "baseline_viewers": baseline_viewers},
            "floor": floor | {"profile_used": profile, "mix_us": floor_us,
                              "paced": paced["rows"], "paced_mix_us": paced_us},
            "shopcast": ours, "baseline": base,
            "ratios": ratios(ours["fit"], floor_us, base["fit"] if base else None, paced_us),
            "errors": errors, "warnings": warnings}
