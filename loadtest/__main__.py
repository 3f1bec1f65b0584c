"""``python -m loadtest webrtc-probe ...``: load generators that speak only public protocols."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from loadtest.webrtc_probe import (
    ProbeConfig,
    print_summary,
    resolve_server_pids,
    run_probe,
    write_report,
)

# The probe's whole run is bounded: steps x (join + settle + window) plus this margin.
RUN_MARGIN_S = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("webrtc-probe", help="server CPU per viewer and glass-to-glass latency")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    p.add_argument("--room", default="probe")
    p.add_argument(
        "--secret",
        default=os.environ.get("SHOPCAST_SECRET", ""),
        help="HS256 token key to mint tokens [env SHOPCAST_SECRET]",
    )
    p.add_argument("--publish-token", default="", help="use this token instead of minting")
    p.add_argument("--view-token", default="", help="use this token for every viewer")
    p.add_argument("--viewers", type=int, default=20, help="viewers at the last step")
    p.add_argument("--decoders", type=int, default=5, help="viewers that decode (latency)")
    p.add_argument(
        "--duration",
        type=float,
        default=20.0,
        help="seconds of measurement, split evenly over the steps (0, N/2, N)",
    )
    p.add_argument("--settle", type=float, default=2.0, help="seconds before each window")
    p.add_argument("--bitrate", type=int, default=600_000, help="publisher video bps")
    p.add_argument(
        "--server-pid",
        type=int,
        action="append",
        default=[],
        help="server process (repeatable); default: whoever listens on the port",
    )
    p.add_argument("--report", default="", help="JSON report path (default loadtest/reports/)")
    p.add_argument("--uvloop", action="store_true", help="run the load generator on uvloop")
    p.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper())
    if not args.secret and not (args.publish_token and args.view_token):
        parser.error("give --secret (or SHOPCAST_SECRET), or both --publish-token and --view-token")
    if args.viewers < 0 or args.decoders < 0 or args.duration <= 0:
        parser.error("need --viewers >= 0, --decoders >= 0 and --duration > 0")
    args.decoders = min(args.decoders, args.viewers)
    cfg = ProbeConfig(
        url=args.url.rstrip("/"),
        room=args.room,
        secret=args.secret,
        viewers=args.viewers,
        decoders=args.decoders,
        duration=args.duration,
        settle=args.settle,
        bitrate=args.bitrate,
        server_pids=resolve_server_pids(args.url, args.server_pid),
        publish_token=args.publish_token,
        view_token=args.view_token,
        report=args.report,
    )
    limit = args.duration + 3 * (args.settle + 2 * 15.0) + RUN_MARGIN_S
    if args.uvloop:
        import uvloop

        uvloop.install()
    try:
        report = asyncio.run(asyncio.wait_for(run_probe(cfg), limit))
    except Exception as exc:
        print(f"probe failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print_summary(report)
    print(f"report: {write_report(report, cfg.report)}")
    ok = not report["errors"] and all(n > 0 for n in report["decoded_frames_per_decoder"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
