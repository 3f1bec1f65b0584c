"""``python -m loadtest soak``: a churn soak. Does the server keep its memory and fds flat while
rooms, viewers, chat and purchases come and go for half an hour?

It starts its own server (``shopcast serve --workers 2`` on loopback, against a redis-server it
starts with an append-only file, or the memory backend) and keeps a bounded churn going: room
slots, each creating a room over REST, an anchor (aiortc WHIP, or one RTMP anchor from PyAV's
x264), a product, a pin and a flash sale; WebRTC viewers (some with the ``events`` data
channel), HTTP-FLV readers and ``/ws/events`` chatters joining and leaving; purchases with
``Idempotency-Key`` (some retried); then the room is closed over REST with sessions still on
it, and the slot starts the next room under a new name. Every ``--sample-s`` it reads RSS and
open fds of the server, its workers and Redis from /proc, and counts operations and errors.

After the warm-up it compares the last window to the first (medians, within +-tolerance) and
fits a slope per hour (loadtest.soak_analysis); the samples and the verdict go to
loadtest/results/soak-<date>.json. A benchmark, not a test: the suite only checks the analysis.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from loadtest import soak_analysis as analysis
from loadtest import soak_trace
from loadtest.clients import Publisher, loopback_only, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.rtmp_pusher import PushConfig, RtmpPusher
from loadtest.soak_clients import (
    RoomClients,
    Tally,
    buyer_loop,
    flv_seat,
    rest_call,
    viewer_seat,
    ws_seat,
)
from loadtest.soak_procs import CHECKOUT, Redis, Server, export_tree, sample_processes
from loadtest.stats import REPORT_DIR, mint_token, write_report

SCHEMA = "shopcast.loadtest.soak/1"
RESULTS = Path(__file__).resolve().parent / "results"
MAX_MINUTES = 240.0
MAX_ROOMS = 4
MAX_VIEWERS = 20
LIVE_TIMEOUT_S = 15.0
STOP_MARGIN_S = 120.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
ANCHOR_FPS = 15
ANCHOR_BITRATE = 300_000


class Soak:
    """One soak run: the server's address, the tally, the room slots and the samples."""

    def __init__(self, args: argparse.Namespace, url: str, rtmp_url: str, secret: str,
                 server: Server, redis: Redis | None) -> None:
        self.args, self.url, self.rtmp_url, self.secret = args, url, rtmp_url, secret
        self.server, self.redis = server, redis
        self.tally = Tally()
        self.samples: list[dict[str, Any]] = []
        self.rooms_live = 0
        self.run_id = secrets.token_hex(3)
        self.admin = mint_token(secret, "*", "soak-admin", ["admin"], 6 * 3600)
        self.t0 = time.monotonic()
        self.stop_at = self.t0 + args.minutes * 60

    async def run(self) -> None:
        loopback_only()
        if self.args.rtmp:
            from loadtest.rtmp import offer_h264_high
            offer_h264_high()  # an encoder's RTMP stream is High; browsers offer it too
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT, connector=connector) as http:
            await self.sample(http, "start")  # idle, before any room
            sampler = asyncio.create_task(self.sample_loop(http))
            slots = [asyncio.create_task(self.room_slot(http, i)) for i in range(self.args.rooms)]
            await asyncio.gather(*slots, return_exceptions=False)
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        # Idle again: every room closed, our keep-alive connections gone, the server's
        # reaping done; compared with the idle start it shows what churn left behind.
        await asyncio.sleep(self.args.end_settle_s)
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
            await self.sample(http, "end")
        if self.args.trace:
            self.trace_dump()
            await asyncio.sleep(30.0)  # a traced process takes its time to dump

    # --- rooms -------------------------------------------------------------------------------

    async def room_slot(self, http: aiohttp.ClientSession, slot: int) -> None:
        await asyncio.sleep(slot * 3.0)  # stagger the slots
        n = 0
        while self.stop_at - time.monotonic() > 20:
            n += 1
            try:
                await self.room_life(http, slot, f"soak-{self.run_id}-{slot}-{n}")
            except Exception as exc:  # a room that could not go live: counted, next room
                self.tally.error("room", type(exc).__name__, str(exc))
                await asyncio.sleep(2.0)
            await asyncio.sleep(1.0)

    async def room_life(self, http: aiohttp.ClientSession, slot: int, room: str) -> None:
        life = random.uniform(*self.args.room_life_s)
        ends_at = min(time.monotonic() + life, self.stop_at - 5)
        sku = f"sku-{slot}"
        rc = RoomClients(http, self.url, self.secret, room, ends_at, self.tally, sku)
        status, _ = await rest_call(http, self.url, self.tally, "room_create", "POST", "/rooms",
                                    self.admin, {"name": room, "metadata": {"slot": slot}})
        if status != 201:
            return
        anchor: Publisher | RtmpPusher | None = None
        went_live = False
        try:
            anchor = await self.start_anchor(rc, rtmp=self.args.rtmp and slot == 0)
            await self.wait_live(rc)
            room_admin = rc.token("soak-shop", ["admin"])
            path = f"/rooms/{room}"
            await rest_call(http, self.url, self.tally, "product", "POST", path + "/products",
                            room_admin, {"sku": sku, "title": "Soak item", "price": 1999})
            await rest_call(http, self.url, self.tally, "pin", "POST", path + "/pin",
                            room_admin, {"sku": sku})
            await rest_call(http, self.url, self.tally, "sale", "POST", path + "/sales",
                            room_admin, {"sku": sku, "stock": 100_000, "per_user_limit": 3,
                                         "duration_s": int(life) + 120})
            self.rooms_live += 1
            went_live = True
            a = self.args
            seats = [viewer_seat(rc, i, a.viewer_stay_s) for i in range(a.viewers // a.rooms)]
            seats += [flv_seat(rc, i, a.viewer_stay_s) for i in range(a.flv)]
            seats += [ws_seat(rc, i, a.viewer_stay_s) for i in range(a.ws)]
            seats.append(buyer_loop(rc))
            await asyncio.gather(*seats)
            self.check_anchor(anchor)
        finally:
            self.rooms_live -= went_live
            # Closed with sessions on it: the server ends them; then the clients let go.
            await rest_call(http, self.url, self.tally, "room_close", "DELETE", f"/rooms/{room}",
                            self.admin)
            await rc.close_held()
            if isinstance(anchor, RtmpPusher):
                await anchor.stop()
            elif anchor is not None:
                await anchor.close()

    async def start_anchor(self, rc: RoomClients, rtmp: bool) -> Publisher | RtmpPusher:
        token = rc.token("anchor", ["publish"])
        if rtmp:
            pusher = RtmpPusher(PushConfig(
                url=f"{self.rtmp_url}/live/{rc.room}?token={token}", video_bitrate=ANCHOR_BITRATE,
                audio_bitrate=64_000, audio_channels=1, fps=ANCHOR_FPS, gop=ANCHOR_FPS,
                preset="ultrafast"))
            pusher.start()
            if not await pusher.wait_started(LIVE_TIMEOUT_S):
                await pusher.stop()
                raise RuntimeError(f"RTMP anchor did not start: {pusher.error}")
            self.tally.ok("rtmp_publish")
            return pusher
        anchor = await publish(self.url, rc.room, token,
                               PaintedVideoTrack(fps=ANCHOR_FPS, texture=False), ToneAudioTrack(),
                               video_bitrate=ANCHOR_BITRATE, session=rc.http)
        if not await anchor.wait_connected(LIVE_TIMEOUT_S):
            await anchor.close()
            raise RuntimeError("WHIP anchor did not connect")
        self.tally.ok("whip_publish")
        return anchor

    async def wait_live(self, rc: RoomClients) -> None:
        """Until the playback plan answers (the room is live on the node), bounded."""
        token = rc.token("soak-probe", ["subscribe"])
        deadline = time.monotonic() + LIVE_TIMEOUT_S
        while time.monotonic() < deadline:
            async with rc.http.get(f"{self.url}/api/v1/rooms/{rc.room}/playback",
                                   headers={"Authorization": f"Bearer {token}"}) as resp:
                if resp.status == 200:
                    await asyncio.sleep(1.0)  # a first keyframe for the first viewers
                    return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"room {rc.room} not live in {LIVE_TIMEOUT_S} s")

    def check_anchor(self, anchor: Publisher | RtmpPusher | None) -> None:
        if isinstance(anchor, RtmpPusher) and (anchor.error or not anchor.running):
            self.tally.error("rtmp", "dropped", str(anchor.error))
        elif isinstance(anchor, Publisher) and anchor.pc.connectionState != "connected":
            self.tally.error("whip", "dropped", anchor.pc.connectionState)

    # --- samples -----------------------------------------------------------------------------

    async def sample_loop(self, http: aiohttp.ClientSession) -> None:
        traced = False
        while True:
            await asyncio.sleep(self.args.sample_s)
            await self.sample(http, "churn")
            if self.args.trace and not traced and self.samples[-1]["t"] >= self.args.warmup_s:
                traced = True
                self.trace_dump()

    def trace_dump(self) -> None:
        """SIGUSR1 to every server process: each dumps its tracemalloc snapshot and types."""
        procs = self.samples[-1]["procs"]
        soak_trace.signal_all([p["pid"] for k, p in procs.items() if k != "redis"])

    async def sample(self, http: aiohttp.ClientSession, phase: str) -> None:
        t = round(time.monotonic() - self.t0, 1)
        redis_pid = self.redis.proc.pid if self.redis else None
        procs = await asyncio.to_thread(sample_processes, self.server.proc.pid, redis_pid)
        health, metrics_bytes = None, None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{self.url}/healthz") as resp:
                health = resp.status
            async with http.get(f"{self.url}/metrics") as resp:
                metrics_bytes = len(await resp.read())
        sample = {"t": t, "phase": phase, "procs": procs, "healthz": health,
                  "metrics_bytes": metrics_bytes,
                  "redis_keys": await asyncio.to_thread(self.redis.keys) if self.redis else None,
                  "rooms_live": self.rooms_live, **self.tally.snapshot()}
        self.samples.append(sample)
        rss = " ".join(f"{k}={v['rss_kib'] // 1024}M/{v['fds']}fd" for k, v in procs.items())
        print(f"[{t:7.1f}s {phase:<5}] {rss} rooms={self.rooms_live} live={sample['live']} "
              f"ops={sample['ops']} errors={sample['errors']} keys={sample['redis_keys']}",
              flush=True)


# --- command line ----------------------------------------------------------------------------


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("soak", help="churn soak: RSS and fds of the server flat after warm-up")
    p.add_argument("--minutes", type=float, default=30.0, help=f"run time (at most {MAX_MINUTES})")
    p.add_argument("--warmup-s", type=float, default=300.0)
    p.add_argument("--window-s", type=float, default=0.0,
                   help="compared windows (0: 2 min, or a quarter of the post-warm-up time)")
    p.add_argument("--tolerance-pct", type=float, default=analysis.DEFAULT_TOLERANCE_PCT)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--end-settle-s", type=float, default=20.0,
                   help="wait after the last room closed before the idle end sample")
    p.add_argument("--backend", choices=("redis", "memory"), default="redis")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rooms", type=int, default=3, help=f"room slots (at most {MAX_ROOMS})")
    p.add_argument("--viewers", type=int, default=12,
                   help=f"WebRTC viewers at once over all rooms (at most {MAX_VIEWERS})")
    p.add_argument("--flv", type=int, default=1, help="HTTP-FLV readers per room")
    p.add_argument("--ws", type=int, default=2, help="/ws/events chatters per room")
    p.add_argument("--rtmp", action=argparse.BooleanOptionalAction, default=True,
                   help="room slot 0 has an RTMP anchor (PyAV x264) instead of WHIP")
    p.add_argument("--room-life-s", type=_range, default=(60.0, 150.0), help="low,high")
    p.add_argument("--viewer-stay-s", type=_range, default=(8.0, 30.0), help="low,high")
    p.add_argument("--server-commit", default="",
                   help="run the server from this commit (git archive into a temporary "
                        "directory), or 'snapshot': a copy of the working tree taken at start")
    p.add_argument("--trace", action="store_true",
                   help="count every server process's objects by type after the warm-up and "
                        "at the idle end, compared in the report (loadtest.soak_trace)")
    p.add_argument("--trace-frames", type=int, default=0,
                   help="with --trace: also tracemalloc from the warm-up on, this many frames "
                        "(slows the server: a debug run, not a soak)")
    p.add_argument("--report", default="", help="JSON path (default loadtest/results/soak-*)")


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=False).stdout.strip()
    return ""


def main(args: argparse.Namespace) -> int:
    if not 0 < args.minutes <= MAX_MINUTES:
        raise SystemExit(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 1 <= args.rooms <= MAX_ROOMS or not 0 <= args.viewers <= MAX_VIEWERS:
        raise SystemExit(f"--rooms 1..{MAX_ROOMS}, --viewers 0..{MAX_VIEWERS}")
    if args.warmup_s >= args.minutes * 60:
        raise SystemExit("--warmup-s must end before the run does")
    duration = args.minutes * 60
    window = args.window_s or analysis.default_window_s(duration, args.warmup_s)
    secret = secrets.token_urlsafe(32)
    tree, commit = export_tree(args.server_commit) if args.server_commit else (CHECKOUT, "")
    log = REPORT_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    trace_dir = REPORT_DIR / f"soak-trace-{time.strftime('%Y%m%d-%H%M%S')}"
    extra_env = soak_trace.prepare(trace_dir, args.trace_frames) if args.trace else None
    redis = Redis() if args.backend == "redis" else None
    try:
        server = Server(secret, redis.url if redis else "", args.workers, log, tree, extra_env)
    except BaseException:
        if redis:
            redis.stop()
        if commit:
            shutil.rmtree(tree, ignore_errors=True)
        raise
    soak = Soak(args, server.url, server.rtmp_url, secret, server, redis)
    print(f"soak {soak.run_id}: server {server.url} pid {server.proc.pid}, backend "
          f"{args.backend}, {args.minutes} min, warm-up {args.warmup_s} s, window {window} s")
    failure = None
    try:
        import uvloop

        uvloop.run(asyncio.wait_for(soak.run(), duration + STOP_MARGIN_S + args.end_settle_s))
    except Exception as exc:  # the samples so far are still written
        failure = f"{type(exc).__name__}: {exc}"
        print(f"soak stopped early: {failure}", file=sys.stderr)
    finally:
        server_rc = server.proc.poll()
        server.stop()
        if redis:
            redis.stop()
        if commit:
            shutil.rmtree(tree, ignore_errors=True)
    result = analysis.flatness(soak.samples, args.warmup_s, window, args.tolerance_pct)
    if args.trace and soak.samples:
        result["trace"] = {label: soak_trace.compare(trace_dir, proc["pid"])
                           for label, proc in soak.samples[-1]["procs"].items()
                           if label != "redis"}
    report = {
        "schema": SCHEMA, "started": started,
        "command": " ".join(["python -m loadtest", *sys.argv[1:]]),  # no machine paths
        "server_commit": commit or f"working tree at {_commit()}",
        "loadtest_commit": _commit(),
        "config": {k: v for k, v in vars(args).items() if k not in ("func",)},
        "machine": {"cores": os.cpu_count(), "loadavg_end": os.getloadavg()},
        "server_exit_during_run": server_rc, "failure": failure,
        "ops": dict(soak.tally.ops), "bytes": dict(soak.tally.bytes),
        "errors": dict(soak.tally.errors),
        "error_examples": soak.tally.examples, "analysis": result, "samples": soak.samples,
    }
    print(f"operations: {sum(soak.tally.ops.values())} {dict(sorted(soak.tally.ops.items()))}")
    print(f"bytes read: {dict(soak.tally.bytes)}")
    print(f"errors: {sum(soak.tally.errors.values())} {dict(sorted(soak.tally.errors.items()))}")
    for line in analysis.verdict_lines(result):
        print(line)
    default = RESULTS / time.strftime("soak-%Y%m%d-%H%M.json")
    path = write_report(report, args.report or str(default), "soak")
    print(f"report: {path}\nserver log: {log}")
    ok = result["verdict"] == "flat" and not soak.tally.errors and failure is None
    return 0 if ok else 1
