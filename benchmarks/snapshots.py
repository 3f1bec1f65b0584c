"""``python -m benchmarks.snapshots``: what a compliance snapshot costs per room.

White-box: times ``sfu.snapshots.keyframe_jpeg``, the whole of a snapshot's codec work (demux
the FLV header and one keyframe tag, decode the keyframe, encode the JPEG), on the process CPU
clock (libavcodec's threads included), for keyframes ffmpeg encodes the way anchors send them
(x264 Constrained Baseline, a detailed moving picture: ``testsrc2`` plus noise) at 360p, 720p
and 1080p. A room costs one
of these per interval (fewer when the GOP is longer than the interval: the same keyframe is not
decoded twice), so CPU per room is the cost over the interval; nothing here grows with viewers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

from loadtest.stats import write_report
from sfu.settings import SnapshotSettings
from sfu.snapshots import keyframe_jpeg

SIZES = ((640, 360), (1280, 720), (1920, 1080))


def keyframe_flv(width: int, height: int) -> bytes:
    """An FLV stream of one H.264 keyframe: what a room's tag log gives a snapshot."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
            f"testsrc2=size={width}x{height}:rate=30,noise=alls=20:allf=t",
            "-frames:v", "1", "-c:v", "libx264", "-profile:v", "baseline",
            "-pix_fmt", "yuv420p", "-b:v", "2M", "-f", "flv", "-"]
    return subprocess.run(args, check=True, capture_output=True, timeout=60).stdout


def measure(flv: bytes, runs: int, quality: int) -> dict[str, Any]:
    cpu, sizes = [], []
    for _ in range(runs):
        started = time.process_time()
        jpeg, _, _ = keyframe_jpeg(flv, quality)
        cpu.append(time.process_time() - started)
        sizes.append(len(jpeg))
    return {"cpu_ms_median": statistics.median(cpu) * 1000,
            "cpu_ms_p95": sorted(cpu)[int(len(cpu) * 0.95) - 1] * 1000,
            "jpeg_bytes": int(statistics.median(sizes))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.snapshots",
                                description="CPU of one compliance snapshot per room")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--json", default="", help="report path (default loadtest/reports/...)")
    args = p.parse_args(argv)
    settings = SnapshotSettings()
    rows = []
    for width, height in SIZES:
        flv = keyframe_flv(width, height)
        row = {"size": f"{width}x{height}", "keyframe_bytes": len(flv),
               **measure(flv, args.runs, settings.quality)}
        for interval in (settings.interval_s, 1.0):
            row[f"core_pct_at_{interval:g}s"] = row["cpu_ms_median"] / 1000 / interval * 100
        rows.append(row)
        print(f"{row['size']:>9}: {row['cpu_ms_median']:6.2f} ms per snapshot (p95 "
              f"{row['cpu_ms_p95']:.2f}), JPEG {row['jpeg_bytes']} B; per room "
              f"{row[f'core_pct_at_{settings.interval_s:g}s']:.3f}% of a core every "
              f"{settings.interval_s:g} s, {row['core_pct_at_1s']:.2f}% every 1 s", flush=True)
    out = write_report({"benchmark": "snapshots", "runs": args.runs,
                        "quality": settings.quality, "rows": rows}, args.json, "snapshots")
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
