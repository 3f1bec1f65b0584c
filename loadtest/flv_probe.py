"""HTTP-FLV probe: N readers of one room at stream rate, latency read from the painted frames.

Each reader behaves like a small-buffer player: it reads the chunked FLV stream, keeps at most
`buffer_s` of media ahead of its playback clock (so it reads at stream rate once started),
and "presents" each video tag at its playback time. Every keyframe is decoded (an IDR decodes
alone, so this stays cheap with many readers) and its painted capture time gives the offset
between FLV timestamps and the capture clock; every video tag's latency is then
presentation wall time - (its timestamp + that offset). A timestamp jump (the server skipped
the reader ahead) restarts the playback clock, as players do on a discontinuity.

Server CPU comes from /proc (see loadtest.procstat): a baseline window with the publisher only,
then a window with N readers; readers per core = N / (extra CPU in cores). Latency is
reported for the first and the last minute of the run, so drift shows as a difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av

from loadtest.media import TIME_MOD, latency_ms, now_ms, read_painted
from loadtest.procstat import CpuWindow
from loadtest.stats import mint_token, percentiles

TAG_AUDIO = 8
TAG_VIDEO = 9
DISCONTINUITY_MS = 1000
# A live stream has no end: aiohttp's default total timeout (300 s) would cut every reader at
# 5 minutes. Only a stalled socket counts.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)


@dataclass
class FlvStats:
    status: int = 0
    first_byte_s: float | None = None
    first_frame_s: float | None = None  # first keyframe tag fully received
    first_tag_keyframe: bool | None = None  # first media tag after the headers
    video_tags: int = 0
    audio_tags: int = 0
    keyframes: int = 0
    painted: int = 0
    bytes: int = 0
    discontinuities: int = 0
    codecs: set[str] = field(default_factory=set)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, ms)
    ended: str = ""


class FlvClient:
    """One HTTP-FLV reader (see module doc); `run` returns when the stream ends or on stop()."""

    def __init__(self, url: str, *, paced: bool = True, buffer_s: float = 0.3,
                 decode: bool = True, session: aiohttp.ClientSession | None = None) -> None:
        self.url = url
        self.paced = paced
        self.buffer_s = buffer_s
        self.decode = decode
        self.stats = FlvStats()
        self._session = session
        self._stop = asyncio.Event()
        self._decoder: Any = None
        self._offset: int | None = None  # capture_ms - flv timestamp
        self._clock: tuple[float, int] | None = None  # (monotonic, ts) playback origin
        self._last_ts: int | None = None
        self.started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> FlvStats:
        own = self._session is None
        session = self._session or aiohttp.ClientSession(timeout=STREAM_TIMEOUT)
        try:
            async with session.get(self.url) as resp:
                self.stats.status = resp.status
                if resp.status != 200:
                    self.stats.ended = f"http {resp.status}"
                    return self.stats
                await self._read(resp)
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.stats.ended = f"error: {type(exc).__name__}"
        finally:
            if own:
                await session.close()
        return self.stats

    async def _read(self, resp: aiohttp.ClientResponse) -> None:
        buf = bytearray()
        header_done = False
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                read = asyncio.ensure_future(resp.content.readany())
                await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not read.done():
                    read.cancel()
                    self.stats.ended = "stopped"
                    return
                chunk = read.result()
                if not chunk:
                    self.stats.ended = "eof"
                    return
                if self.stats.first_byte_s is None:
                    self.stats.first_byte_s = time.monotonic() - self.started
                self.stats.bytes += len(chunk)
                buf += chunk
                if not header_done:
                    if len(buf) < 13:
                        continue
                    del buf[:13]
                    header_done = True
                while len(buf) >= 11:
                    size = int.from_bytes(buf[1:4], "big")
                    if len(buf) < 11 + size + 4:
                        break
                    kind = buf[0] & 0x1F
                    ts = int.from_bytes(buf[4:7], "big") | (buf[7] << 24)
                    body = bytes(buf[11 : 11 + size])
                    del buf[: 11 + size + 4]
                    await self._tag(kind, ts, body)
        finally:
            stop.cancel()

    async def _tag(self, kind: int, ts: int, body: bytes) -> None:
        s = self.stats
        if kind == TAG_AUDIO and body:
            s.codecs.add("aac" if body[0] >> 4 == 10 else f"audio{body[0] >> 4}")
            if len(body) > 1 and body[1] != 0:
                s.audio_tags += 1
            return
        if kind != TAG_VIDEO or len(body) < 5:
            return
        s.codecs.add("h264" if body[0] & 0x0F == 7 else f"video{body[0] & 0x0F}")
        if body[1] == 0:  # AVC sequence header: a (new) decoder configuration
            self._decoder = av.CodecContext.create("h264", "r")
            self._decoder.extradata = body[5:]
            self._decoder.thread_count = 1
            return
        if body[1] != 1:
            return
        keyframe = body[0] >> 4 == 1
        now = time.monotonic()
        if s.first_tag_keyframe is None:
            s.first_tag_keyframe = keyframe
        s.video_tags += 1
        if keyframe:
            s.keyframes += 1
            if s.first_frame_s is None:
                s.first_frame_s = now - self.started
            if self.decode and self._decoder is not None:
                self._read_painted(ts, body[5:])
        await self._present(ts, now)

    def _read_painted(self, ts: int, nalus: bytes) -> None:
        try:
            frames = self._decoder.decode(av.Packet(nalus))
        except av.FFmpegError:
            return
        for frame in frames:
            painted = read_painted(frame)
            if painted is not None:
                self.stats.painted += 1
                self._offset = painted[0] - ts

    async def _present(self, ts: int, arrived: float) -> None:
        """Playback clock: present at its time, or now if late (a stall moves the clock)."""
        if self._last_ts is not None and abs(ts - self._last_ts) > DISCONTINUITY_MS:
            self.stats.discontinuities += 1
            self._clock = None
        self._last_ts = ts
        if self._clock is None:
            self._clock = (arrived, ts)
        origin, ts0 = self._clock
        due = origin + (ts - ts0) / 1000
        if due < arrived:  # late: rebuffer
            self._clock = (arrived, ts)
            due = arrived
        if self._offset is not None:
            wall_ms = now_ms() + round((due - time.monotonic()) * 1000)
            ms = latency_ms(ts + self._offset, wall_ms)
            if ms > TIME_MOD // 2:  # slightly negative (timestamp jitter), not 35 years
                ms -= TIME_MOD
            self.stats.latencies.append((due, float(ms)))
        if self.paced:
            ahead = due - time.monotonic() - self.buffer_s
            if ahead > 0:  # read no further ahead of playback than the player's buffer
                await asyncio.sleep(ahead)


@dataclass
class FlvProbeConfig:
    url: str
    room: str = "probe"
    secret: str = ""
    readers: int = 20
    duration: float = 60.0
    baseline: float = 10.0
    publish: bool = True
    server_pids: list[int] = field(default_factory=list)


async def run_flv_probe(cfg: FlvProbeConfig) -> dict[str, Any]:
    """Publish (optional), measure the baseline, add N readers, measure, report."""
    from loadtest.clients import flv_url, publish
    from loadtest.media import PaintedVideoTrack, ToneAudioTrack

    ttl = int(cfg.duration + cfg.baseline + 600)
    anchor = None
    if cfg.publish:
        token = mint_token(cfg.secret, cfg.room, "flv-probe-anchor", ["publish"], ttl)
        anchor = await publish(cfg.url, cfg.room, token, PaintedVideoTrack(), ToneAudioTrack())
    view = mint_token(cfg.secret, cfg.room, "flv-probe", ["subscribe"], ttl)
    try:
        await asyncio.sleep(3.0)  # the room goes live and the GOP cache fills
        base = CpuWindow(cfg.server_pids)
        await asyncio.sleep(cfg.baseline)
        baseline = base.result()
        url = await flv_url(cfg.url, cfg.room, view)  # the readers start within its ticket
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=STREAM_TIMEOUT) as session:
            clients = [FlvClient(url, session=session) for _ in range(cfg.readers)]
            tasks = []
            for client in clients:
                tasks.append(asyncio.create_task(client.run()))
                await asyncio.sleep(0.02)
            await asyncio.sleep(3.0)
            window = CpuWindow(cfg.server_pids)
            started = time.monotonic()
            await asyncio.sleep(cfg.duration)
            loaded = window.result()
            for client in clients:
                client.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if anchor is not None:
            with contextlib.suppress(Exception):
                await anchor.close()
    return summarize(cfg, clients, baseline, loaded, started)


def summarize(cfg: FlvProbeConfig, clients: list[FlvClient], baseline: dict[str, Any],
              loaded: dict[str, Any], started: float) -> dict[str, Any]:
    samples = [(t, ms) for c in clients for t, ms in c.stats.latencies if t >= started]
    end = max((t for t, _ in samples), default=started)
    first = [ms for t, ms in samples if t < started + 60]
    last = [ms for t, ms in samples if t >= end - 60]
    extra = None
    if baseline.get("server_cpu_pct") is not None and loaded.get("server_cpu_pct") is not None:
        extra = loaded["server_cpu_pct"] - baseline["server_cpu_pct"]
    return {
        "readers": cfg.readers,
        "duration_s": cfg.duration,
        "server_cpu_pct_baseline": baseline.get("server_cpu_pct"),
        "server_cpu_pct_loaded": loaded.get("server_cpu_pct"),
        "machine_busy_pct": loaded.get("machine_busy_pct"),
        "readers_per_core": round(cfg.readers / (extra / 100), 1) if extra and extra > 0 else None,
        "latency_ms": percentiles([ms for _, ms in samples]),
        "latency_first_minute_ms": percentiles(first),
        "latency_last_minute_ms": percentiles(last),
        # p50/p95 per minute of the run: drift shows as a trend, a one-off stall as a step
        "latency_per_minute_ms": [
            {"minute": m + 1, **{k: v for k, v in percentiles(
                [ms for t, ms in samples if started + 60 * m <= t < started + 60 * (m + 1)]
            ).items() if k in ("p50", "p95", "n")}}
            for m in range(int((end - started) // 60) + 1)
        ],
        "first_frame_s": percentiles([c.stats.first_frame_s for c in clients
                                      if c.stats.first_frame_s is not None]),
        "discontinuities": sum(c.stats.discontinuities for c in clients),
        "ended": sorted({c.stats.ended for c in clients}),
        "statuses": sorted({c.stats.status for c in clients}),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m loadtest.flv_probe --url ... --secret ... --readers N --duration S``"""
    import argparse
    import json
    import os

    from loadtest.procstat import resolve_server_pids
    from loadtest.stats import write_report

    p = argparse.ArgumentParser(prog="python -m loadtest.flv_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--room", default="flvprobe")
    p.add_argument("--secret", default=os.environ.get("SHOPCAST_SECRET", ""))
    p.add_argument("--readers", type=int, default=20)
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (600: drift)")
    p.add_argument("--baseline", type=float, default=10.0, help="publisher-only CPU window")
    p.add_argument("--no-publish", action="store_true", help="the room is already live")
    p.add_argument("--server-pid", type=int, action="append", default=[])
    p.add_argument("--report", default="")
    args = p.parse_args(argv)
    if not args.secret:
        p.error("--secret (or SHOPCAST_SECRET) is needed to mint tokens")
    cfg = FlvProbeConfig(
        url=args.url, room=args.room, secret=args.secret, readers=args.readers,
        duration=args.duration, baseline=args.baseline, publish=not args.no_publish,
        server_pids=resolve_server_pids(args.url, args.server_pid),
    )
    report = asyncio.run(run_flv_probe(cfg))
    print(json.dumps(report, indent=2))
    path = write_report(report, args.report or time.strftime(
        "loadtest/reports/flv-probe-%Y%m%d-%H%M%S.json"))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
