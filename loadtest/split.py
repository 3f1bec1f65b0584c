"""``python -m loadtest split``: a viewer's server cost, split into what media costs and what a
connected viewer costs with no media at all.

One painted publisher; the server's CPU (its process tree, /proc) is measured three times over
``--window`` seconds: publisher alone, N viewers receiving, then the same N viewers with the
publisher muted over REST (nothing forwarded; what remains is aiortc's per-viewer RTCP, ICE
consent and timers). (receiving - muted) / N is the per-packet part, (muted - alone) / N the
fixed part. Loopback only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from loadtest.clients import Publisher, Viewer, loopback_only, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.procstat import cpu_ticks, process_tree, resolve_server_pids
from loadtest.stats import mint_token, write_report

TTL = 3600
HZ = 100
MAX_VIEWERS = 300
MIN_RATE = 110  # packets/s per viewer below this: the load generator, not the server, is full


def add_parser(sub: Any) -> None:
    p = sub.add_parser("split", help="per-viewer server CPU: per packet vs fixed")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--secret", default="")
    p.add_argument("--room", default="split-bench")
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--server-pid", type=int, action="append", default=[])
    p.add_argument("--report", default="loadtest/reports")


async def _cpu_percent(pids: list[int], seconds: float) -> float:
    before, start = cpu_ticks(pids), time.monotonic()
    await asyncio.sleep(seconds)
    after = cpu_ticks(pids)
    used = sum(after.get(pid, 0) - before.get(pid, 0) for pid in after) / HZ
    return 100 * used / (time.monotonic() - start)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    url, room, n = args.url.rstrip("/"), args.room, min(args.viewers, MAX_VIEWERS)

    def token(identity: str, *grants: str) -> str:
        return mint_token(args.secret, room, identity, list(grants), TTL)

    pids = process_tree(resolve_server_pids(url, args.server_pid))
    publisher: Publisher | None = None
    viewers: list[Viewer] = []
    try:
        publisher = await publish(url, room, token("anchor", "publish"),
                                  PaintedVideoTrack(), ToneAudioTrack())
        await asyncio.sleep(3)
        alone = await _cpu_percent(pids, args.window)
        for i in range(n):
            viewers.append(await play(url, room, token(f"v{i}", "subscribe"), decode=False))
        await asyncio.sleep(5)
        packets0 = sum(v.packets for v in viewers)
        receiving = await _cpu_percent(pids, args.window)
        packets1 = sum(v.packets for v in viewers)
        async with aiohttp.ClientSession() as http, http.post(
            f"{url}/api/v1/rooms/{room}/participants/anchor/mute", json={"muted": True},
            headers={"Authorization": f"Bearer {token('admin', 'admin')}"},
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"mute: HTTP {response.status}")
        await asyncio.sleep(3)
        quiet0 = sum(v.packets for v in viewers)
        muted = await _cpu_percent(pids, args.window)
        quiet = sum(v.packets for v in viewers) - quiet0
    finally:
        for peer in [*viewers, *([publisher] if publisher else [])]:
            await peer.close()
    rate = (packets1 - packets0) / args.window / n  # packets per second per viewer
    per_packet_pct = (receiving - muted) / n
    return {
        "scenario": "split", "viewers": n, "window_s": args.window,
        "server_cpu_pct": {"publisher_alone": round(alone, 2), "receiving": round(receiving, 2),
                           "muted": round(muted, 2)},
        "packets_per_s_per_viewer": round(rate, 1),
        "packets_while_muted": quiet,
        "per_viewer_pct": round((receiving - alone) / n, 4),
        "fixed_per_viewer_pct": round((muted - alone) / n, 4),
        "per_packet_per_viewer_pct": round(per_packet_pct, 4),
        "us_per_forwarded_packet": round(per_packet_pct / 100 / rate * 1e6, 2) if rate else None,
        "valid": rate >= MIN_RATE,
    }


def main(args: argparse.Namespace) -> int:
    if not args.secret:
        raise SystemExit("give --secret")
    report = asyncio.run(asyncio.wait_for(run(args), 3 * args.window + args.viewers + 120))
    cpu = report["server_cpu_pct"]
    print(f"{report['viewers']} viewers at {report['packets_per_s_per_viewer']} packets/s each; "
          f"server CPU % of a core: publisher alone {cpu['publisher_alone']}, receiving "
          f"{cpu['receiving']}, muted {cpu['muted']} ({report['packets_while_muted']} packets)")
    print(f"per viewer {report['per_viewer_pct']} % = fixed {report['fixed_per_viewer_pct']} % "
          f"+ media {report['per_packet_per_viewer_pct']} % "
          f"({report['us_per_forwarded_packet']} us per forwarded packet)")
    print(f"report: {write_report(report, args.report, 'split')}")
    if not report["valid"]:
        print(f"! under {MIN_RATE} packets/s per viewer: this load generator is saturated; "
              "use fewer viewers", flush=True)
    return 0 if report["packets_while_muted"] == 0 and report["valid"] else 1
