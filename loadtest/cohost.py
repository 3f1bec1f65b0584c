"""``python -m loadtest cohost``: a co-host call on one node, measured as the two anchors see it.

The anchor publishes a painted clock (loadtest.media) over WHIP, invites ``guest`` over REST,
and the guest publishes its own painted clock with a ``cohost`` token. Each watches the other
over WHEP (the server never sends a participant its own tracks, so each viewer's one section
pair carries the other's picture) and reads the clock off every decoded frame: glass-to-glass
latency in each direction, one process and one clock, so no clock skew enters the figure.

An HTTP-FLV reader stays attached meanwhile, so the room's FLV mixer runs as in production; its
CPU comes from the node's ``/metrics`` (``shopcast_flv_mixer_cpu_seconds_total``) and the whole
server's from /proc. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from typing import Any

import aiohttp

from loadtest.clients import Publisher, Viewer, flv_url, loopback_only, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.procstat import cpu_ticks, process_tree, resolve_server_pids
from loadtest.stats import mint_token, percentiles, write_report

TTL = 3600
MIXER_METRIC = re.compile(
    r'^shopcast_flv_mixer_cpu_seconds_total\{[^}]*room="(?P<room>[^"]+)"[^}]*\} (?P<v>\S+)$', re.M
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cohost", help="anchor <-> co-host latency, FLV mixer CPU per room")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--secret", default="")
    p.add_argument("--room", default="cohost-bench")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--server-pid", type=int, action="append", default=[])
    p.add_argument("--report", default="loadtest/reports")


async def _mixer_seconds(http: aiohttp.ClientSession, url: str, room: str) -> float | None:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    for match in MIXER_METRIC.finditer(text):
        if match["room"] == room:
            return float(match["v"])
    return None


async def _read_flv(http: aiohttp.ClientSession, url: str, counter: list[int]) -> None:
    with contextlib.suppress(aiohttp.ClientError, asyncio.CancelledError):
        async with http.get(url) as response:
            async for chunk in response.content.iter_any():
                counter[0] += len(chunk)


def _latency(viewer: Viewer, since: float) -> list[int]:
    return [ms for ms, at in zip(viewer.latencies_ms, viewer.latency_at, strict=True)
            if at >= since]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    url, room, secret = args.url.rstrip("/"), args.room, args.secret

    def token(identity: str, *grants: str) -> str:
        return mint_token(secret, room, identity, list(grants), TTL)

    anchor_token, guest_token = token("anchor", "publish"), token("guest", "cohost", "subscribe")
    pids = process_tree(resolve_server_pids(url, args.server_pid))
    publishers: list[Publisher] = []
    viewers: list[Viewer] = []
    flv_bytes = [0]
    async with aiohttp.ClientSession() as http:
        try:
            publishers.append(await publish(url, room, anchor_token,
                                            PaintedVideoTrack(colour="red"), ToneAudioTrack()))
            await asyncio.sleep(1.0)
            async with http.post(f"{url}/api/v1/rooms/{room}/cohosts",
                                 json={"identity": "guest"},
                                 headers={"Authorization": f"Bearer {anchor_token}"}) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"invite: HTTP {resp.status} {await resp.text()}")
            publishers.append(await publish(url, room, guest_token,
                                            PaintedVideoTrack(colour="blue"), ToneAudioTrack()))
            at_guest = await play(url, room, guest_token)  # the anchor, as the co-host sees it
            at_anchor = await play(url, room, anchor_token, slot=1)  # the co-host, at the anchor
            viewers += [at_guest, at_anchor]
            flv = asyncio.create_task(_read_flv(
                http, await flv_url(url, room, token("flv", "subscribe"), http), flv_bytes))
            await asyncio.sleep(args.warmup)
            start, mixer0, ticks0 = time.monotonic(), await _mixer_seconds(http, url, room), \
                cpu_ticks(pids)
            await asyncio.sleep(args.seconds)
            elapsed = time.monotonic() - start
            mixer1, ticks1 = await _mixer_seconds(http, url, room), cpu_ticks(pids)
            flv.cancel()
            await asyncio.gather(flv, return_exceptions=True)
        finally:
            for peer in [*viewers, *publishers]:
                await peer.close()
    hz = 100
    server_cpu = sum(ticks1.get(p, 0) - ticks0.get(p, 0) for p in ticks1) / hz / elapsed
    mixer = None if mixer0 is None or mixer1 is None else (mixer1 - mixer0) / elapsed
    return {
        "scenario": "cohost", "room": room, "seconds": round(elapsed, 2),
        "anchor_to_cohost_ms": percentiles(_latency(at_guest, start)),
        "cohost_to_anchor_ms": percentiles(_latency(at_anchor, start)),
        "frames": {"at_cohost": at_guest.decoded, "at_anchor": at_anchor.decoded},
        "frame_gaps": {"at_cohost": at_guest.frame_gaps, "at_anchor": at_anchor.frame_gaps},
        "flv_bytes": flv_bytes[0],
        "mixer_cpu_cores": None if mixer is None else round(mixer, 4),
        "server_cpu_cores": round(server_cpu, 4),
    }


def print_summary(report: dict[str, Any]) -> None:
    print(f"co-host call, room {report['room']}, {report['seconds']} s measured")
    for key, label in (("anchor_to_cohost_ms", "anchor -> co-host"),
                       ("cohost_to_anchor_ms", "co-host -> anchor")):
        p = report[key]
        print(f"  {label:18} glass-to-glass p50 {p.get('p50', 0):.0f} ms  "
              f"p95 {p.get('p95', 0):.0f} ms  p99 {p.get('p99', 0):.0f} ms")
    mixer = report["mixer_cpu_cores"]
    print(f"  FLV mixer CPU: {'n/a' if mixer is None else f'{100 * mixer:.1f}% of one core'}"
          f" per room; whole server {100 * report['server_cpu_cores']:.1f}%;"
          f" FLV bytes read {report['flv_bytes']}")


def main(args: argparse.Namespace) -> int:
    if not args.secret:
        raise SystemExit("give --secret")
    report = asyncio.run(asyncio.wait_for(run(args), args.seconds + args.warmup + 60))
    print_summary(report)
    print(f"report: {write_report(report, args.report, 'cohost')}")
    ok = report["anchor_to_cohost_ms"] and report["cohost_to_anchor_ms"]
    return 0 if ok else 1
