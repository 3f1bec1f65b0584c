"""``python -m loadtest <scenario>``: load generators that speak only public protocols.

Scenarios: ``webrtc`` (one painted publisher, N viewers over K processes, floor and baseline in
the same run), ``floor`` (SRTP protect + sendto per packet per viewer, nothing else), ``events``
and ``flashsale`` (loadtest.live_bench), ``cohost`` (anchor <-> co-host latency, FLV mixer CPU;
loadtest.cohost), ``split`` (a viewer's server CPU: per packet vs fixed; loadtest.split),
``rtmp`` (RTMP ingest: CPU per anchor, glass-to-glass to WebRTC and FLV, viewer cost against a
WHIP anchor; loadtest.rtmp), ``soak`` (a churn soak of a server it starts itself: RSS and fds
flat after warm-up; loadtest.soak), ``record`` (recording CPU per room and disk per hour;
loadtest.record).
The FLV probe is ``python -m loadtest.flv_probe``. The white-box per-packet path benchmark,
which imports ``sfu``, is not here: ``python -m benchmarks.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from loadtest import cohost, live_bench, paced_floor, record, rtmp, soak, split
from loadtest.floor import print_floor, run_floor
from loadtest.procstat import resolve_server_pids
from loadtest.stats import write_report
from loadtest.webrtc import BASELINE_VIEWERS, WebrtcConfig, run_webrtc
from loadtest.webrtc_report import check_report, plot, print_summary, refit

# Each step is bounded (join timeout + settle + window); the whole run also is.
RUN_MARGIN_S = 600.0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _webrtc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (loopback)")
    p.add_argument("--secret", default=os.environ.get("SHOPCAST_SECRET", ""),
                   help="HS256 token key [env SHOPCAST_SECRET]")
    p.add_argument("--room", default="loadtest")
    p.add_argument("--viewers", type=_ints, default=[50, 100, 200, 400], help="steps, e.g. 50,100")
    p.add_argument("--procs", type=int, default=2, help="counting viewer processes (K)")
    p.add_argument("--decoders", type=int, default=5, help="viewers that decode (latency sample)")
    p.add_argument("--step-seconds", type=float, default=20.0, help="measurement window per step")
    p.add_argument("--settle", type=float, default=5.0, help="pause after joins before a window")
    p.add_argument("--bitrate", type=int, default=600_000, help="publisher video bps")
    p.add_argument("--counting", choices=("raw", "full"), default="raw",
                   help="counting viewers: raw header counting, or aiortc's full receive path")
    p.add_argument("--stop-loss-pct", type=float, default=5.0,
                   help="stop stepping after a step that loses more than this")
    p.add_argument("--server-pid", type=int, action="append", default=[],
                   help="server root pid (repeatable); default: whoever listens on the port")
    p.add_argument("--baseline", choices=("none", "mediarelay"), default="none")
    p.add_argument("--baseline-viewers", type=_ints, default=list(BASELINE_VIEWERS))
    p.add_argument("--floor-viewers", type=int, default=50, help="0: skip the floor")
    p.add_argument("--paced-floor-viewers", type=int, default=200,
                   help="viewers of the paced floor (loadtest.paced_floor); 0: skip it")
    p.add_argument("--report", default="", help="JSON path (default loadtest/reports/)")
    p.add_argument("--plot", default="", help="PNG path for CPU per viewer and latency vs N")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    _webrtc_args(sub.add_parser("webrtc", help="server CPU per viewer, latency, loss, TTFF"))
    f = sub.add_parser("floor", help="SRTP protect + sendto per packet per viewer")
    f.add_argument("--viewers", type=int, default=50)
    f.add_argument("--sizes", type=_ints, default=[120, 1200])
    f.add_argument("--seconds", type=float, default=1.5)
    r = sub.add_parser("report", help="re-fit, re-print and re-plot a saved webrtc report")
    r.add_argument("path")
    r.add_argument("--plot", default="")
    live_bench.add_parsers(sub)
    cohost.add_parser(sub)
    split.add_parser(sub)
    paced_floor.add_parser(sub)
    rtmp.add_parser(sub)
    soak.add_parser(sub)
    record.add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    if args.command in ("events", "flashsale"):
        return live_bench.run(args)
    if args.command == "paced-floor":
        return paced_floor.main(args)
    if args.command == "rtmp":
        return rtmp.main(args)
    if args.command == "record":
        return record.run_main(args)
    if args.command == "soak":
        return soak.main(args)
    if args.command in ("cohost", "split"):
        if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
            parser.error("loopback only: --url must be http://127.0.0.1:PORT")
        return cohost.main(args) if args.command == "cohost" else split.main(args)

    if args.command == "report":
        report = refit(json.loads(Path(args.path).read_text()))
        Path(args.path).write_text(json.dumps(report, indent=2))
        print_summary(report)
        if args.plot:
            plot(report, args.plot)
        return 0
    if args.command == "floor":
        print_floor(run_floor(args.viewers, tuple(args.sizes), seconds=args.seconds))
        return 0
    if not args.secret:
        parser.error("give --secret (or SHOPCAST_SECRET)")
    if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("loopback only: --url must be http://127.0.0.1:PORT")
    cfg = WebrtcConfig(
        url=args.url.rstrip("/"), secret=args.secret, room=args.room, viewers=args.viewers,
        procs=args.procs, decoders=args.decoders, step_seconds=args.step_seconds,
        settle=args.settle, bitrate=args.bitrate, mode=args.counting,
        stop_loss_pct=args.stop_loss_pct,
        server_pids=resolve_server_pids(args.url, args.server_pid))
    steps = len(args.viewers) + 1 + (len(args.baseline_viewers) + 1) * (args.baseline != "none")
    limit = steps * (args.step_seconds + args.settle + 60 + 0.6 * max(args.viewers)) + RUN_MARGIN_S
    import uvloop

    try:
        report = uvloop.run(asyncio.wait_for(
            run_webrtc(cfg, args.baseline, args.baseline_viewers, args.floor_viewers,
                       args.paced_floor_viewers), limit))
    except Exception as exc:
        print(f"webrtc scenario failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    if missing := check_report(report):
        print(f"! report is missing {missing}", file=sys.stderr)
    path = write_report(report, args.report, "webrtc")
    print(f"report: {path}")
    if args.plot:
        plot(report, args.plot)
        print(f"plot: {args.plot}")
    return 0 if not report["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
