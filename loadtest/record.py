"""``python -m loadtest record``: what recording a room costs, measured from the outside.

Starts its own ``shopcast serve`` (``loadtest.soak_procs.Server``, recordings into a temporary
directory), publishes one painted WHIP anchor (H.264 + Opus at ``--bitrate``), then alternates
phases of ``--phase-s`` seconds with the room's recording off and on (``PUT
/api/v1/rooms/{room}/recording``), ``--rounds`` times, in the same run and the same room: the
server's CPU (its whole process tree, /proc) in each phase, so the difference is what
recording adds (the room's FLV output runs in both), and the remux's own time on the loop
(``shopcast_recording_remux_seconds_total`` on /metrics). Disk: the recordings' bytes over their
duration (``GET /api/v1/rooms/{room}/recordings``), per hour. Prints the figures and writes
``loadtest/results/record-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.procstat import CLK_TCK, cpu_ticks, process_tree
from loadtest.soak_procs import Server
from loadtest.stats import mint_token, write_report

RESULTS = Path(__file__).resolve().parent / "results"
ROOM = "recbench"
TTL_S = 3600
MAX_PHASE_S = 600.0
MAX_ROUNDS = 10


def _cpu_s(root: int) -> float:
    return sum(cpu_ticks(process_tree([root])).values()) / CLK_TCK


async def _phase(root: int, seconds: float) -> float:
    """Cores the server tree used over ``seconds`` (CPU seconds per second)."""
    before, began = _cpu_s(root), time.monotonic()
    await asyncio.sleep(seconds)
    return (_cpu_s(root) - before) / (time.monotonic() - began)


async def _remux_s(http: aiohttp.ClientSession, url: str) -> float:
    """The server's ``shopcast_recording_remux_seconds_total`` (its /metrics)."""
    async with http.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("shopcast_recording_remux_seconds_total "):
                return float(line.split()[1])
    return 0.0


async def _api(http: aiohttp.ClientSession, method: str, url: str, token: str,
               body: Any = None) -> Any:
    async with http.request(method, url, json=body,
                            headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status != 200:
            raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
        return await response.json()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    secret = secrets.token_urlsafe(32)
    folder = Path(tempfile.mkdtemp(prefix="shopcast-record-"))
    os.environ["SHOPCAST_RECORD_DIR"] = str(folder / "recordings")
    os.environ.pop("SHOPCAST_RECORD", None)
    server = Server(secret, "", 0, folder / "serve.log")
    admin = mint_token(secret, ROOM, "bench-admin", ["admin"], TTL_S)
    switch = f"{server.url}/api/v1/rooms/{ROOM}/recording"
    off: list[float] = []
    on: list[float] = []
    remux: list[float] = []  # the remux's own time on the server's loop, per second
    try:
        anchor = await publish(server.url, ROOM, mint_token(secret, ROOM, "bench-anchor",
                                                            ["publish"], TTL_S),
                               PaintedVideoTrack(), ToneAudioTrack(),
                               video_bitrate=args.bitrate)
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.sleep(args.warmup_s)
                for round_ in range(args.rounds):
                    off.append(await _phase(server.proc.pid, args.phase_s))
                    await _api(http, "PUT", switch, admin, {"enabled": True})
                    remux_before, began = await _remux_s(http, server.url), time.monotonic()
                    on.append(await _phase(server.proc.pid, args.phase_s))
                    remux.append((await _remux_s(http, server.url) - remux_before)
                                 / (time.monotonic() - began))
                    await _api(http, "PUT", switch, admin, {"enabled": False})
                    print(f"round {round_ + 1}: off {off[-1] * 100:.2f}% on {on[-1] * 100:.2f}% "
                          "of a core", flush=True)
                await asyncio.sleep(1.0)  # the last recording's index entry
                listed = (await _api(http, "GET", f"{server.url}/api/v1/rooms/{ROOM}/recordings",
                                     admin))["recordings"]
        finally:
            await anchor.close()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    recorded_s = sum(r["duration_s"] for r in listed)
    recorded_bytes = sum(r["bytes"] for r in listed)
    per_s = recorded_bytes / recorded_s if recorded_s else 0.0
    cpu_off, cpu_on = statistics.mean(off), statistics.mean(on)
    return {
        "scenario": "record",
        "room": {"bitrate_bps": args.bitrate, "anchor": "aiortc WHIP, H.264 + Opus"},
        "phase_s": args.phase_s, "rounds": args.rounds,
        "cpu_cores_off": off, "cpu_cores_on": on,
        "cpu_recording_pct_of_core": round((cpu_on - cpu_off) * 100, 3),
        "remux_pct_of_core": [round(r * 100, 3) for r in remux],
        "recordings": len(listed), "recorded_s": round(recorded_s, 3),
        "recorded_bytes": recorded_bytes,
        "bytes_per_s": round(per_s), "bitrate_bps": round(per_s * 8),
        "disk_bytes_per_hour": round(per_s * 3600),
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phase-s", type=float, default=20.0, help="seconds per off/on phase")
    p.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--bitrate", type=int, default=600_000, help="anchor video bps")
    p.add_argument("--out", default="", help="report path (default loadtest/results/record-*)")


def add_parser(sub: Any) -> None:
    """``python -m loadtest record``."""
    add_arguments(sub.add_parser("record", help="recording CPU per room and disk per hour"))


def run_main(args: argparse.Namespace) -> int:
    if not 0 < args.phase_s <= MAX_PHASE_S or not 1 <= args.rounds <= MAX_ROUNDS:
        raise SystemExit(f"--phase-s in (0, {MAX_PHASE_S}], --rounds in [1, {MAX_ROUNDS}]")
    report = asyncio.run(asyncio.wait_for(
        run(args), args.rounds * 2 * (args.phase_s + 10) + args.warmup_s + 120))
    print(f"recording CPU: {report['cpu_recording_pct_of_core']:.2f}% of a core per room "
          f"(on {statistics.mean(report['cpu_cores_on']) * 100:.2f}%, "
          f"off {statistics.mean(report['cpu_cores_off']) * 100:.2f}%)")
    print(f"remux on the event loop (/metrics): "
          f"{statistics.mean(report['remux_pct_of_core']):.3f}% of a core per room")
    print(f"disk: {report['disk_bytes_per_hour'] / 1e6:.1f} MB per hour per room "
          f"({report['bitrate_bps'] / 1000:.0f} kbit/s recorded, {report['recorded_s']:.0f} s "
          f"in {report['recordings']} recordings)")
    out = args.out or str(RESULTS / time.strftime("record-%Y%m%d-%H%M%S.json"))
    print(f"report: {write_report(report, out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.record", description=__doc__)
    add_arguments(p)
    return run_main(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
