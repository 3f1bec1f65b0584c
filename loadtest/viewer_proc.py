"""One load-generator process: an event loop (uvloop) holding many WHEP viewers.

The parent (loadtest.webrtc) drives it with one JSON command per line on stdin and reads one
JSON reply per line on stdout, so viewers spread over several processes (cores) while the parent
alone keeps the clock and the CPU windows. Modes: ``raw`` viewers count RTP headers from raw
datagrams (loadtest.rawcount, the cheap default), ``full`` viewers run aiortc's whole receive
path without decoding (to measure what the cheap path saves), ``decode`` viewers decode video
and read the painted capture time (glass-to-glass latency).

Usage (by the parent): ``python -m loadtest.viewer_proc --url U --room R --mode raw``
with the token key in the environment variable LOADTEST_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

from loadtest.clients import Viewer, play
from loadtest.rawcount import RawCounter, srtp_profile
from loadtest.stats import mint_token

JOIN_CONCURRENCY = 8
CONNECT_TIMEOUT_S = 15.0
MAX_COMMANDS = 10_000
IDLE_LIMIT_S = 900.0  # no command for this long: the parent is gone, leave
CLOSE_TIMEOUT_S = 30.0
TOKEN_TTL_S = 4 * 3600


class Fleet:
    """The viewers of this process and the bookkeeping the parent asks for."""

    def __init__(self, url: str, room: str, secret: str, mode: str) -> None:
        self.url, self.room, self.secret, self.mode = url, room, secret, mode
        self.viewers: list[tuple[int, Viewer, RawCounter | None]] = []  # (step, viewer, hook)
        self._latency_read: dict[int, int] = {}  # viewer index -> samples already sent

    async def join(self, indices: list[int], step: int) -> dict[str, Any]:
        gate = asyncio.Semaphore(JOIN_CONCURRENCY)
        errors: list[str] = []
        t0 = time.monotonic()

        async def one(index: int) -> None:
            token = mint_token(
                self.secret, self.room, f"lt-viewer-{index}", ["subscribe"], TOKEN_TTL_S
            )
            async with gate:
                try:
                    v = await asyncio.wait_for(
                        play(self.url, self.room, token, decode=self.mode == "decode"),
                        CONNECT_TIMEOUT_S,
                    )
                except Exception as exc:  # report every failure, keep going with the others
                    errors.append(f"viewer {index}: {type(exc).__name__}: {exc}")
                    return
                hook = None
                if self.mode == "raw":
                    hook = RawCounter(v)
                    hook.install()  # before ICE completes: no media has arrived yet
                self.viewers.append((step, v, hook))
                if not await v.wait_connected(CONNECT_TIMEOUT_S):
                    errors.append(f"viewer {index}: ICE/DTLS did not connect")

        await asyncio.gather(*(one(i) for i in indices))
        return {"joined": len(indices) - len(errors), "errors": errors[:50],
                "join_s": round(time.monotonic() - t0, 3)}

    def snap(self) -> dict[str, Any]:
        """Per-viewer counters now, and the latency samples that arrived since the last snap."""
        rows = []
        latencies: list[int] = []
        for n, (step, v, _hook) in enumerate(self.viewers):
            video = v.video.stream.snapshot() if v.video else (0, 0, 0)
            audio = v.audio.stream.snapshot() if v.audio else (0, 0, 0)
            vbytes = v.video.stream.bytes if v.video else 0
            abytes = v.audio.stream.bytes if v.audio else 0
            first = v.first_frame_at
            ttff = None if first is None else round(first - v.started_at, 4)
            connected = v.connected_at is not None and not v.failed
            # Layout: loadtest.webrtc_report.ROW_FIELDS
            rows.append([step, int(connected), *video, *audio, vbytes, abytes, v.frames, ttff])
            if v.decode:
                done = self._latency_read.get(n, 0)
                latencies.extend(v.latencies_ms[done:])
                self._latency_read[n] = len(v.latencies_ms)
        return {"viewers": rows, "latencies_ms": latencies, "cpu_s": _own_cpu_s()}

    async def close(self) -> dict[str, Any]:
        """Per-viewer final stats, then DELETE every session and close every peer."""
        final = []
        for step, v, hook in self.viewers:
            s = v.stats() | {"step": step, "srtp_profile": srtp_profile(v)}
            if hook is not None:
                s["raw"] = hook.stats()
            final.append(s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(v.close() for _, v, _ in self.viewers), return_exceptions=True),
                CLOSE_TIMEOUT_S,
            )
        return {"viewers": final}


def _own_cpu_s() -> float:
    t = os.times()
    return round(t.user + t.system, 3)


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(fleet: Fleet) -> None:
    """Answer the parent's commands until ``close``, EOF, or IDLE_LIMIT_S of silence."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _reply({"op": "ready", "pid": os.getpid()})
    for _ in range(MAX_COMMANDS):
        try:
            line = await asyncio.wait_for(reader.readline(), IDLE_LIMIT_S)
        except TimeoutError:
            line = b""
        if not line:
            await fleet.close()
            return
        cmd = json.loads(line)
        tag = {"id": cmd.get("id")}  # echoed, so a late reply is never taken for another's
        if cmd["op"] == "join":
            _reply(await fleet.join(cmd["indices"], cmd["step"]) | tag)
        elif cmd["op"] == "snap":
            _reply(fleet.snap() | tag)
        elif cmd["op"] == "close":
            _reply(await fleet.close() | tag)
            return
        else:
            _reply({"error": f"unknown op {cmd['op']!r}"} | tag)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.viewer_proc", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--mode", choices=("raw", "full", "decode"), default="raw")
    p.add_argument("--log-level", default="ERROR")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    fleet = Fleet(args.url, args.room, os.environ.get("LOADTEST_SECRET", ""), args.mode)
    import uvloop

    uvloop.run(serve(fleet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
