"""``python -m loadtest rtmp``: what an RTMP anchor costs and how late its viewers see it.

Three phases against one running server, all from the outside (RTMP, WHIP/WHEP, HTTP-FLV;
server CPU from /proc of the process tree listening on the HTTP port):

- ``cpu``: server CPU with no anchor, then with one RTMP anchor and no viewer at all, video only
  (packetizing + FLV remux) and video + AAC (plus the AAC -> Opus transcode): the ingest cost
  per anchor, as % of one core, anchor window minus the idle window.
- ``latency``: an RTMP anchor (loadtest.rtmp_pusher: the painted clock, x264 zerolatency, 1 s
  GOP, 1.2 Mbit/s + AAC) watched by decoding WHEP viewers (loadtest.clients.play) and HTTP-FLV
  readers that decode every video tag as it arrives (loadtest.flv_clock); each reads the
  capture time painted into the picture. Pusher and viewers share this process and its
  clock, so no skew enters.
- ``viewers``: the same counting viewers (loadtest.viewer_proc, raw counting) against a WHIP
  anchor room and an RTMP anchor room, 600 kbit/s video each, N = 0 then N viewers: the server's
  marginal CPU per viewer and per forwarded packet for both, side by side, in one run.

aiortc offers H.264 only as (Constrained) Baseline and an encoder's RTMP stream is High, so every
viewer here also offers High (`offer_h264_high`), as browsers do; the counting viewer processes
are started as ``python -m loadtest.rtmp`` for that reason (see the bottom of this module).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from loadtest.clients import SignalingError, Viewer, flv_url, loopback_only, play, publish
from loadtest.flv_clock import FlvClock
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from loadtest.procstat import CpuWindow, resolve_server_pids
from loadtest.rtmp_pusher import PushConfig, RtmpPusher
from loadtest.stats import mint_token, percentiles, write_report
from loadtest.webrtc import START_TIMEOUT_S, LoadProc, WebrtcConfig, _join, machine
from loadtest.webrtc_report import COLUMNS, step_row, table_line

SCHEMA = "shopcast.loadtest.rtmp/1"
TTL = 4 * 3600
PHASES = ("cpu", "latency", "viewers")
HIGH_PROFILES = ("640c1f", "64001f")  # Constrained High, High: what browsers offer besides
LIVE_TIMEOUT_S = 15.0
LIVE_POLL_S = 0.25
TARGETS = {"rtmp_to_webrtc_p95_ms": 400.0, "ingest_cpu_pct": 5.0, "viewer_cost_ratio": 1.25}
CODEC_METRIC = re.compile(r'^shopcast_rtmp_codec_seconds_total\{room="(?P<room>[^"]+)",'
                          r'[^}]*kind="(?P<kind>\w+)"\} (?P<v>\S+)$', re.M)


def offer_h264_high() -> None:
    """Let this process's aiortc offer H.264 High and Constrained High (packetization-mode 1)
    besides its Baseline pair, on free dynamic payload types with RTX. Idempotent."""
    from aiortc import RTCRtpCodecParameters
    from aiortc import codecs as aiortc_codecs

    video = aiortc_codecs.CODECS["video"]
    feedback = next((c.rtcpFeedback for c in video if c.mimeType.lower() != "video/rtx"), [])
    pt = max(c.payloadType or 0 for c in video) + 1
    for plid in HIGH_PROFILES:
        params: dict[str, int | str | None] = {
            "level-asymmetry-allowed": "1", "packetization-mode": "1", "profile-level-id": plid}
        if any(c.parameters == params for c in video):
            continue
        video.append(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000,
                                           payloadType=pt, rtcpFeedback=list(feedback),
                                           parameters=params))
        video.append(RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000,
                                           payloadType=pt + 1, parameters={"apt": pt}))
        pt += 2


# --- the run ---------------------------------------------------------------------------------


class Run:
    """One scenario run: where the server is, the tokens, and what went wrong so far."""

    def __init__(self, args: argparse.Namespace, pids: list[int]) -> None:
        self.args = args
        self.url = args.url.rstrip("/")
        self.rtmp = args.rtmp_url.rstrip("/")
        self.pids = pids
        self.errors: list[str] = []

    def token(self, room: str, identity: str, grant: str) -> str:
        return mint_token(self.args.secret, room, identity, [grant], TTL)

    async def pusher(self, room: str, video_bitrate: int, audio_bitrate: int) -> RtmpPusher:
        url = f"{self.rtmp}/live/{room}?token={self.token(room, 'rtmp-anchor', 'publish')}"
        pusher = RtmpPusher(PushConfig(url=url, video_bitrate=video_bitrate,
                                       audio_bitrate=audio_bitrate, preset=self.args.preset,
                                       audio_channels=self.args.audio_channels))
        pusher.start()
        if not await pusher.wait_started(LIVE_TIMEOUT_S):
            await pusher.stop()
            raise RuntimeError(f"RTMP push to room {room} did not start: {pusher.error}")
        return pusher

    async def play_when_live(self, room: str, identity: str) -> Viewer:
        """A decoding WHEP viewer, retried while the room is not live yet (first keyframe)."""
        deadline = time.monotonic() + LIVE_TIMEOUT_S
        for _ in range(int(LIVE_TIMEOUT_S / LIVE_POLL_S)):
            try:
                return await play(self.url, room, self.token(room, identity, "subscribe"))
            except SignalingError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(LIVE_POLL_S)
        raise RuntimeError(f"room {room} did not go live in {LIVE_TIMEOUT_S} s")

    async def codec_seconds(self, http: aiohttp.ClientSession, room: str) -> float | None:
        """The room's AAC -> Opus codec thread time from /metrics (None if not exported)."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.get(f"{self.url}/metrics") as resp:
                text = await resp.text()
            found = [float(m["v"]) for m in CODEC_METRIC.finditer(text)
                     if m["room"] == room and m["kind"] == "audio"]
            return sum(found) if found else None
        return None


async def cpu_phase(run: Run, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Idle server, then one RTMP anchor with no viewer: video only, then video + AAC."""
    args = run.args
    idle = CpuWindow(run.pids)
    await asyncio.sleep(args.cpu_seconds)
    out: dict[str, Any] = {"idle": idle.result()}
    for label, audio in (("video_only", 0), ("video_aac", args.audio_bitrate)):
        room = f"{args.room}-cpu-{label.replace('_', '-')}"
        pusher = await run.pusher(room, args.bitrate, audio)
        try:
            await asyncio.sleep(args.settle)
            codec0, window = await run.codec_seconds(http, room), CpuWindow(run.pids)
            await asyncio.sleep(args.cpu_seconds)
            cpu, codec1 = window.result(), await run.codec_seconds(http, room)
        finally:
            await pusher.stop()
        codec = None if codec0 is None or codec1 is None else \
            round(100 * (codec1 - codec0) / float(cpu["window_s"] or 1), 2)
        out[label] = cpu | {"room": room, "aac_opus_codec_cpu_pct": codec,
                            "pusher": pusher.stats()}
        await asyncio.sleep(1.0)
    idle_pct = out["idle"]["server_cpu_pct"]
    out["ingest_cpu_pct"] = {
        label: None if idle_pct is None or out[label]["server_cpu_pct"] is None
        else round(out[label]["server_cpu_pct"] - idle_pct, 2)
        for label in ("video_only", "video_aac")}
    return out


async def latency_phase(run: Run, http: aiohttp.ClientSession) -> dict[str, Any]:
    """One 1.2 Mbit/s RTMP anchor; decoding WHEP viewers and FLV readers read its clock."""
    args = run.args
    room = f"{args.room}-latency"
    pusher = await run.pusher(room, args.bitrate, args.audio_bitrate)
    viewers: list[Viewer] = []
    readers: list[FlvClock] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for i in range(args.webrtc_viewers):
            viewers.append(await run.play_when_live(room, f"whep-{i}"))
        flv = await flv_url(run.url, room, run.token(room, "flv", "subscribe"), http)
        for _ in range(args.flv_readers):
            readers.append(FlvClock(flv))
            tasks.append(asyncio.create_task(readers[-1].run(http)))
        await asyncio.sleep(args.warmup)
        start, window = time.monotonic(), CpuWindow(run.pids)
        await asyncio.sleep(args.seconds)
        cpu = window.result()
    finally:
        for reader in readers:
            reader.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await pusher.stop()
    webrtc = [ms for v in viewers for ms, at in zip(v.latencies_ms, v.latency_at, strict=True)
              if at >= start]
    flv_ms = [ms for r in readers for at, ms in r.latencies if at >= start]
    sent = [ms for at, ms in pusher.sent_ms if at >= start]
    return {
        "room": room, "seconds": args.seconds, "server": cpu, "pusher": pusher.stats(),
        "rtmp_to_webrtc_ms": percentiles(webrtc), "rtmp_to_flv_ms": percentiles(flv_ms),
        # the parts that are not the server's: the pusher's paint -> sent, an FLV decode
        "pusher_paint_to_sent_ms": percentiles(sent),
        "flv_decode_ms": percentiles([round(ms, 2) for r in readers for ms in r.decode_ms]),
        "webrtc_viewers": [{"decoded": v.decoded, "painted": v.painted,
                            "frame_gaps": v.frame_gaps, "lost": v.lost} for v in viewers],
        "flv_readers": [{"status": r.status, "video_tags": r.video_tags, "decoded": r.decoded,
                         "painted": r.painted, "dropped": r.dropped, "headers": r.headers,
                         "ended": r.ended} for r in readers],
    }


async def _start_viewer_proc(cfg: WebrtcConfig) -> LoadProc:
    """loadtest.viewer_proc in raw counting mode, offering H.264 High (``-m loadtest.rtmp``)."""
    env = dict(os.environ, LOADTEST_SECRET=cfg.secret)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.rtmp", "--url", cfg.url, "--room", cfg.room,
        "--mode", "raw", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=env, limit=1 << 24)
    lp = LoadProc(proc, "raw")
    await lp.read(START_TIMEOUT_S)
    return lp


async def _window(procs: list[LoadProc], cfg: WebrtcConfig, n: int, seconds: float,
                  idle: float | None, groups: dict[str, list[int]]) -> dict[str, Any]:
    before = await asyncio.gather(*(p.call({"op": "snap"}) for p in procs))
    cpu = CpuWindow(cfg.server_pids, groups)
    await asyncio.sleep(seconds)
    after = await asyncio.gather(*(p.call({"op": "snap"}) for p in procs))
    rows0 = [r for s in before for r in s["viewers"]]
    rows1 = [r for s in after for r in s["viewers"]]
    res = cpu.result()
    return step_row(n, float(res["window_s"] or 1), res, rows0, rows1, [False] * len(rows1),
                    [], idle)


async def viewer_cost(run: Run, kind: str) -> dict[str, Any]:
    """N = 0, then N counting viewers of a ``kind`` ("whip" or "rtmp") anchor at 600 kbit/s."""
    args = run.args
    room = f"{args.room}-{kind}-{int(time.time()) % 100000}"
    cfg = WebrtcConfig(url=run.url, secret=args.secret, room=room, procs=args.procs,
                       decoders=0, mode="raw", server_pids=run.pids, label=kind)
    procs = [await _start_viewer_proc(cfg) for _ in range(max(1, args.procs))]
    groups = {"loadgen": [os.getpid()], "counters": [p.proc.pid for p in procs]}
    anchor: Any = None
    steps: list[dict[str, Any]] = []
    try:
        if kind == "whip":
            token = run.token(room, "whip-anchor", "publish")
            anchor = await publish(run.url, room, token, PaintedVideoTrack(), ToneAudioTrack(),
                                   video_bitrate=args.compare_bitrate)
            if not await anchor.wait_connected(LIVE_TIMEOUT_S):
                raise RuntimeError(f"WHIP anchor of {room} did not connect")
        else:
            anchor = await run.pusher(room, args.compare_bitrate, args.audio_bitrate)
        await asyncio.sleep(args.settle)
        steps.append(await _window(procs, cfg, 0, args.step_seconds, None, groups))
        print(f"{kind:>7} " + table_line(steps[-1]), flush=True)
        errors: list[str] = []
        await _join(procs, None, cfg, args.viewers, args.viewers, errors)
        run.errors += [f"{kind}: {e}" for e in errors[:20]]
        await asyncio.sleep(args.settle)
        steps.append(await _window(procs, cfg, args.viewers, args.step_seconds,
                                   steps[0]["server_cpu_pct"], groups))
        print(f"{kind:>7} " + table_line(steps[-1]), flush=True)
        await asyncio.gather(*(p.call({"op": "close"}, 60) for p in procs),
                             return_exceptions=True)
    finally:
        await asyncio.gather(*(p.stop() for p in procs), return_exceptions=True)
        if anchor is not None:
            await (anchor.stop() if isinstance(anchor, RtmpPusher) else anchor.close())
    loaded = steps[-1]
    return {"kind": kind, "room": room, "steps": steps,
            "cpu_pct_per_viewer": loaded["marginal_cpu_pct_per_viewer"],
            "us_per_forwarded_packet": loaded["us_per_forwarded_packet"],
            "anchor": anchor.stats() if isinstance(anchor, RtmpPusher) else None}


async def viewers_phase(run: Run) -> dict[str, Any]:
    """WHIP then RTMP (``--rounds 2``: WHIP, RTMP, RTMP, WHIP, so a drift cancels out)."""
    order = ["whip", "rtmp"] if run.args.rounds == 1 else ["whip", "rtmp", "rtmp", "whip"]
    print(" ".join(f"{c:>7}" for c in ("anchor", *COLUMNS)), flush=True)
    runs = [await viewer_cost(run, kind) for kind in order]
    out: dict[str, Any] = {"viewers": run.args.viewers, "order": order, "runs": runs}
    for key in ("cpu_pct_per_viewer", "us_per_forwarded_packet"):
        means = {}
        for kind in ("whip", "rtmp"):
            vals = [r[key] for r in runs if r["kind"] == kind and r[key] is not None]
            means[kind] = round(sum(vals) / len(vals), 4) if vals else None
        whip, rtmp = means["whip"], means["rtmp"]
        out[key] = means | {"rtmp_over_whip": round(rtmp / whip, 3) if whip and rtmp else None}
    return out


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target beside what was measured (None when the phase did not run)."""
    lat = (report.get("latency") or {}).get("rtmp_to_webrtc_ms") or {}
    ingest = ((report.get("cpu") or {}).get("ingest_cpu_pct") or {}).get("video_aac")
    ratio = ((report.get("viewers") or {}).get("cpu_pct_per_viewer") or {}).get("rtmp_over_whip")
    limit = TARGETS["viewer_cost_ratio"]
    rows: dict[str, tuple[float | None, float | str, Callable[[float], bool]]] = {
        "rtmp_to_webrtc_p95_ms": (lat.get("p95"), TARGETS["rtmp_to_webrtc_p95_ms"],
                                  lambda v: v <= TARGETS["rtmp_to_webrtc_p95_ms"]),
        "ingest_cpu_pct": (ingest, TARGETS["ingest_cpu_pct"],
                           lambda v: v <= TARGETS["ingest_cpu_pct"]),
        "viewer_cost_ratio": (ratio, f"1/{limit}..{limit}", lambda v: 1 / limit <= v <= limit),
    }
    return {name: {"target": target, "measured": value,
                   "met": None if value is None else bool(ok(value))}
            for name, (value, target, ok) in rows.items()}


async def run_scenario(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    offer_h264_high()
    run = Run(args, resolve_server_pids(args.url, args.server_pid))
    load0 = os.getloadavg()
    report: dict[str, Any] = {"schema": SCHEMA, "machine": machine(),
                              "config": {k: v for k, v in vars(args).items()
                                         if k not in ("secret", "func")}}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for phase in args.phases:
            try:
                if phase == "cpu":
                    report["cpu"] = await cpu_phase(run, http)
                elif phase == "latency":
                    report["latency"] = await latency_phase(run, http)
                else:
                    report["viewers"] = await viewers_phase(run)
            except (RuntimeError, TimeoutError, SignalingError, aiohttp.ClientError) as exc:
                run.errors.append(f"{phase}: {type(exc).__name__}: {exc}")
    report["load_average"] = {"start": [round(x, 2) for x in load0],
                              "end": [round(x, 2) for x in os.getloadavg()]}
    report["targets"] = verdicts(report)
    report["errors"] = run.errors
    return report


def _pct(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_summary(report: dict[str, Any]) -> None:
    if cpu := report.get("cpu"):
        ingest = cpu["ingest_cpu_pct"]
        print(f"server idle {_pct(cpu['idle']['server_cpu_pct'])} % of a core; one RTMP anchor,"
              f" no viewer: video only +{_pct(ingest['video_only'])} %, video + AAC"
              f" +{_pct(ingest['video_aac'])} % (AAC -> Opus codec thread"
              f" {_pct(cpu['video_aac']['aac_opus_codec_cpu_pct'], 2)} %)")
    if lat := report.get("latency"):
        for key, label in (("rtmp_to_webrtc_ms", "RTMP -> WebRTC"), ("rtmp_to_flv_ms",
                                                                       "RTMP -> HTTP-FLV")):
            p = lat[key]
            print(f"{label:17} glass-to-glass p50 {_pct(p.get('p50'), 0)} ms"
                  f"  p95 {_pct(p.get('p95'), 0)} ms  p99 {_pct(p.get('p99'), 0)} ms"
                  f"  (n={p.get('n', 0)})")
        sent, dec = lat["pusher_paint_to_sent_ms"], lat["flv_decode_ms"]
        print(f"  of which the pusher's paint -> sent p50 {_pct(sent.get('p50'), 0)} ms"
              f" p95 {_pct(sent.get('p95'), 0)} ms; an FLV reader's decode p50"
              f" {_pct(dec.get('p50'))} ms p95 {_pct(dec.get('p95'))} ms; server"
              f" {_pct(lat['server']['server_cpu_pct'])} % of a core, machine"
              f" {_pct(lat['server']['machine_busy_pct'], 0)} % busy")
    if view := report.get("viewers"):
        cost, pkt = view["cpu_pct_per_viewer"], view["us_per_forwarded_packet"]
        print(f"{view['viewers']} WebRTC viewers: WHIP anchor {_pct(cost['whip'], 3)} %/viewer"
              f" ({_pct(pkt['whip'])} us/packet), RTMP anchor {_pct(cost['rtmp'], 3)} %/viewer"
              f" ({_pct(pkt['rtmp'])} us/packet): RTMP/WHIP {_pct(cost['rtmp_over_whip'], 2)}x")
    for name, row in report["targets"].items():
        print(f"target {name}: {row['target']}, measured {row['measured']}, met {row['met']}")
    for line in report["errors"][:20]:
        print(f"! {line}")


def _phases(text: str) -> list[str]:
    phases = [p.strip() for p in text.split(",") if p.strip()]
    if not phases or any(p not in PHASES for p in phases):
        raise argparse.ArgumentTypeError(f"phases from {','.join(PHASES)}")
    return phases


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rtmp", help="RTMP ingest: CPU per anchor, glass-to-glass, viewer cost")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (loopback)")
    p.add_argument("--rtmp-url", default="rtmp://127.0.0.1:1935", help="RTMP base (loopback)")
    p.add_argument("--secret", default=os.environ.get("SHOPCAST_SECRET", ""))
    p.add_argument("--room", default="rtmp-bench")
    p.add_argument("--phases", type=_phases, default=list(PHASES), help="cpu,latency,viewers")
    p.add_argument("--bitrate", type=int, default=1_200_000, help="anchor video bps (cpu, latency)")
    p.add_argument("--audio-bitrate", type=int, default=128_000, help="AAC bps")
    p.add_argument("--audio-channels", type=int, choices=(1, 2), default=2, help="AAC channels")
    p.add_argument("--preset", default="veryfast", help="x264 preset of the pusher")
    p.add_argument("--cpu-seconds", type=float, default=20.0, help="each CPU window")
    p.add_argument("--webrtc-viewers", type=int, default=3, help="decoding WHEP viewers")
    p.add_argument("--flv-readers", type=int, default=3, help="decoding HTTP-FLV readers")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--seconds", type=float, default=30.0, help="latency window")
    p.add_argument("--viewers", type=int, default=100, help="counting viewers per anchor")
    p.add_argument("--procs", type=int, default=2, help="counting viewer processes")
    p.add_argument("--compare-bitrate", type=int, default=600_000, help="video bps, both anchors")
    p.add_argument("--step-seconds", type=float, default=20.0)
    p.add_argument("--settle", type=float, default=5.0)
    p.add_argument("--rounds", type=int, choices=(1, 2), default=1)
    p.add_argument("--server-pid", type=int, action="append", default=[])
    p.add_argument("--report", default="loadtest/results/rtmp.json")


def time_limit(args: argparse.Namespace) -> float:
    """An upper bound of the whole run: every window and pause, joins, and a margin."""
    cpu = 3 * args.cpu_seconds + 2 * (args.settle + 2 * LIVE_TIMEOUT_S) if "cpu" in args.phases \
        else 0
    lat = args.warmup + args.seconds + 4 * LIVE_TIMEOUT_S if "latency" in args.phases else 0
    per_anchor = 2 * (args.settle + args.step_seconds) + 30 + 0.6 * args.viewers + 120
    view = 2 * args.rounds * per_anchor if "viewers" in args.phases else 0
    return cpu + lat + view + 120


def main(args: argparse.Namespace) -> int:
    if not args.secret:
        raise SystemExit("give --secret (or SHOPCAST_SECRET)")
    for url in (args.url, args.rtmp_url):
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"loopback only: {url}")
    import uvloop

    report = uvloop.run(asyncio.wait_for(run_scenario(args), time_limit(args)))
    print_summary(report)
    print(f"report: {write_report(report, args.report, 'rtmp')}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":  # a counting viewer process of the ``viewers`` phase (see above)
    from loadtest import viewer_proc

    offer_h264_high()
    sys.exit(viewer_proc.main())
