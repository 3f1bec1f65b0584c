"""The RTMP ingest benchmark (``python -m loadtest rtmp``): its pure parts offline (the FLV tag
splitter, the x264 settings, the verdicts, the High-profile offer), the pusher and the FLV clock
reader on a file (no server), and a short smoke run of the whole scenario against a real
``shopcast serve`` process (uvloop, workers, RTMP port), as the benchmark is run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from aiortc import RTCRtpSender
from aiortc import codecs as aiortc_codecs
from conftest import free_port

from loadtest.flv_clock import FlvClock, FlvTags
from loadtest.rtmp import offer_h264_high, verdicts
from loadtest.rtmp_pusher import PushConfig, RtmpPusher, x264_params

ROOT = Path(__file__).resolve().parent.parent


def flv_tag(kind: int, ts: int, body: bytes) -> bytes:
    head = bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
    return head + bytes([ts >> 24]) + b"\0\0\0" + body + (11 + len(body)).to_bytes(4, "big")


def test_flv_tags_survive_any_chunking() -> None:
    tags = [(9, 0, b"\x17\x00" + b"x" * 40), (8, 21, b"\xaf\x01abc"),
            (9, 0x01020304, b"\x27\x01" + b"y" * 300)]
    stream = b"FLV\x01\x05\0\0\0\x09" + b"\0\0\0\0" + b"".join(flv_tag(*t) for t in tags)
    for size in (1, 7, 11, 4096):
        splitter = FlvTags()
        got = []
        for at in range(0, len(stream), size):
            got += splitter.feed(stream[at : at + size])
        assert got == tags, size


def test_x264_params_fix_the_gop_and_cap_the_rate() -> None:
    params = dict(p.split("=") for p in x264_params(PushConfig(url="x")).split(":"))
    assert params == {"keyint": "30", "min-keyint": "30", "scenecut": "0", "bframes": "0",
                      "vbv-maxrate": "1200", "vbv-bufsize": "1200"}


def test_verdicts_compare_each_target() -> None:
    report = {"latency": {"rtmp_to_webrtc_ms": {"p50": 90.0, "p95": 420.0}},
              "cpu": {"ingest_cpu_pct": {"video_only": 1.0, "video_aac": 3.5}},
              "viewers": {"cpu_pct_per_viewer": {"rtmp_over_whip": 0.7}}}
    v = verdicts(report)
    assert (v["rtmp_to_webrtc_p95_ms"]["measured"], v["rtmp_to_webrtc_p95_ms"]["met"]) == (420.0,
                                                                                         False)
    assert v["ingest_cpu_pct"]["met"] is True
    assert v["viewer_cost_ratio"]["met"] is False  # 0.7 is outside 1/1.25..1.25
    assert all(row["met"] is None for row in verdicts({}).values())


def test_offer_h264_high_adds_high_profiles_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(aiortc_codecs.CODECS, "video", list(aiortc_codecs.CODECS["video"]))
    offer_h264_high()
    count = len(aiortc_codecs.CODECS["video"])
    offer_h264_high()
    assert len(aiortc_codecs.CODECS["video"]) == count
    plids = {c.parameters.get("profile-level-id") for c in
             RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"}
    assert {"42e01f", "640c1f", "64001f"} <= plids
    pts = [c.payloadType for c in aiortc_codecs.CODECS["video"]]
    assert len(pts) == len(set(pts))


async def test_pusher_file_reads_back_as_a_painted_high_stream(tmp_path: Path) -> None:
    """The pusher's stream is what the issue asks for (High, no B-frames, a keyframe per
    second, AAC), and an FLV clock reader decodes its painted capture times."""
    path = tmp_path / "push.flv"
    pusher = RtmpPusher(PushConfig(url=str(path), seconds=2.0))
    pusher.start()
    for _ in range(100):
        if not pusher.running:
            break
        await asyncio.sleep(0.05)
    await pusher.stop()
    assert pusher.error is None and pusher.frames + pusher.skipped_frames == 60
    assert pusher.keyframes == 2
    with av.open(str(path)) as container:
        video = container.streams.video[0].codec_context
        assert (video.profile, video.max_b_frames, video.width) == ("High", 0, 640)
        audio = container.streams.audio[0].codec_context
        assert (audio.name, audio.channels, audio.sample_rate) == ("aac", 2, 48000)
    clock = FlvClock("unused")
    data = path.read_bytes()
    for at in range(0, len(data), 1000):
        clock.feed(data[at : at + 1000])
    clock.close(wait=True)
    assert clock.headers == 1 and clock.painted == pusher.frames
    ages = [ms for _at, ms in clock.latencies]
    assert 0 <= ages[-1] < 10_000  # painted within the last few seconds, by this clock


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_scenario_smoke_against_a_served_node(tmp_path: Path) -> None:
    """Every phase, tiny windows, against ``shopcast serve --workers 2 --rtmp-port``."""
    port, rtmp_port, secret = free_port(), free_port(), "smoke-secret-0123456789abcdef0123"
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "shopcast.cli", "serve", "--host", "127.0.0.1", "--port",
         str(port), "--secret", secret, "--workers", "2", "--rtmp-port", str(rtmp_port)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=dict(os.environ))
    report = tmp_path / "rtmp.json"
    try:
        for _ in range(300):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.1)
        done = subprocess.run(
            [sys.executable, "-m", "loadtest", "rtmp", "--url", f"http://127.0.0.1:{port}",
             "--rtmp-url", f"rtmp://127.0.0.1:{rtmp_port}", "--secret", secret,
             "--server-pid", str(server.pid), "--cpu-seconds", "1", "--settle", "1",
             "--warmup", "2", "--seconds", "3", "--viewers", "2", "--procs", "1",
             "--step-seconds", "2", "--report", str(report)],
            cwd=ROOT, capture_output=True, text=True, timeout=200)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(report.read_text())
    assert out["errors"] == []
    lat = out["latency"]
    assert lat["rtmp_to_webrtc_ms"]["n"] > 0 and lat["rtmp_to_flv_ms"]["n"] > 0
    assert all(r["painted"] > 0 for r in lat["flv_readers"])
    assert out["cpu"]["ingest_cpu_pct"]["video_aac"] is not None
    for run in out["viewers"]["runs"]:
        assert run["steps"][-1]["connected"] == 2, run["kind"]
        assert run["steps"][-1]["forwarded_packets"] > 0, run["kind"]
    assert out["viewers"]["cpu_pct_per_viewer"]["rtmp_over_whip"] is not None
    assert set(out["targets"]) == {"rtmp_to_webrtc_p95_ms", "ingest_cpu_pct",
                                   "viewer_cost_ratio"}

