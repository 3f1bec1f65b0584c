"""The anchor's network-quality score on constructed statistics: the levels, the hysteresis,
the offer's target, and the node's tracker (scores on change, /metrics lines)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from live_helpers import WsClient

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.network_quality import (
    BAD,
    DOWN,
    EXCELLENT,
    FAIR,
    GOOD,
    POOR,
    QualityTracker,
    ReceiveCounters,
    Window,
    offered_video_target_bps,
    raw_score,
    window,
)
from sfu.node import NODE_KEY
from sfu.publisher_quality import PublisherQuality
from shopcast.config import Config

pytest_plugins = ["store_fixtures"]


def two_seconds(loss: float = 0.0, jitter_ms: float = 3.0, kbps: float = 800,
                target_kbps: int | None = None, remb_kbps: int | None = None,
                packets: int = 300) -> Window:
    return Window(seconds=2.0, expected=packets, received=round(packets * (1 - loss)),
                  bitrate_bps=kbps * 1000, jitter_ms=jitter_ms,
                  target_bps=target_kbps * 1000 if target_kbps else None,
                  remb_bps=remb_kbps * 1000 if remb_kbps else None)


@pytest.mark.parametrize(("w", "expected"), [
    (two_seconds(), EXCELLENT),
    (two_seconds(loss=0.02), GOOD),
    (two_seconds(loss=0.05), FAIR),
    (two_seconds(loss=0.10), POOR),  # the 10 % random loss prompts the anchor
    (two_seconds(loss=0.30), BAD),
    (two_seconds(jitter_ms=180), POOR),  # a queue that fills and drains
    (two_seconds(packets=300, loss=1.0), DOWN),
])
def test_levels(w: Window, expected: int) -> None:
    assert raw_score(w) == expected


def test_loss_and_jitter_each_lower_the_score() -> None:
    scores = [raw_score(two_seconds(loss=x / 100)) for x in range(0, 40, 2)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    scores = [raw_score(two_seconds(jitter_ms=j)) for j in range(0, 300, 20)]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]


def test_bitrate_under_target_lowers_but_never_prompts_alone() -> None:
    assert raw_score(two_seconds(kbps=780, target_kbps=800)) == EXCELLENT
    under = raw_score(two_seconds(kbps=100, target_kbps=800))
    assert FAIR <= under < EXCELLENT
    # overuse seen by the node's estimator (REMB far below what arrives) lowers it too
    assert raw_score(two_seconds(kbps=800, remb_kbps=200)) < EXCELLENT
    # with loss as well, the shortfall counts: lower than the loss alone
    assert raw_score(two_seconds(loss=0.05, kbps=100, target_kbps=800)) < raw_score(
        two_seconds(loss=0.05))


def test_an_encoder_held_down_by_a_capped_path_is_prompted() -> None:
    """A rate cap the encoder adapted to: no loss left, but a queue (jitter), the node's REMB
    far under what arrives and a tenth of the target: still prompted. The same bitrate chosen
    on a clean path (a step down) is not."""
    capped = two_seconds(jitter_ms=120, kbps=37, target_kbps=800, remb_kbps=11)
    assert raw_score(capped) <= POOR
    stepped_down = two_seconds(jitter_ms=5, kbps=37, target_kbps=800, remb_kbps=60)
    assert raw_score(stepped_down) == FAIR


def test_too_few_packets_judge_delay_only() -> None:
    assert raw_score(two_seconds(packets=4, loss=0.5)) == EXCELLENT
    assert raw_score(Window(2.0, 0, 0, 0.0, 0.0)) == DOWN


def test_window_from_counters() -> None:
    before = ReceiveCounters(expected=1000, received=990, video_octets=1_000_000, jitter_ms=2)
    after = ReceiveCounters(expected=1300, received=1260, video_octets=1_200_000, jitter_ms=9,
                            target_bps=800_000, remb_bps=500_000)
    w = window(before, after, 2.0)
    assert (w.expected, w.received, w.jitter_ms) == (300, 270, 9)
    assert w.loss == pytest.approx(0.1)
    assert w.bitrate_bps == pytest.approx(800_000)
    assert (w.target_bps, w.remb_bps) == (800_000, 500_000)
    # a restarted sequence (counters going back) is no negative loss
    assert window(after, before, 2.0).loss == 0.0


def test_hysteresis() -> None:
    tracker = QualityTracker()
    assert tracker.update(EXCELLENT) and tracker.score == EXCELLENT
    assert not tracker.update(GOOD)  # one level down: needs a second window
    assert not tracker.update(EXCELLENT)  # back: nothing pending any more
    assert not tracker.update(GOOD)
    assert tracker.update(GOOD) and tracker.score == GOOD
    assert tracker.update(POOR) and tracker.score == POOR  # two levels: at once
    assert not tracker.update(EXCELLENT)  # a rise needs two windows
    assert tracker.update(GOOD) and tracker.score == GOOD  # the milder of the two
    assert not tracker.update(GOOD)


def test_offered_target() -> None:
    sdp = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nb=AS:64\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nb=AS:900\r\nb=TIAS:800000\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nb=TIAS:1\r\n")
    assert offered_video_target_bps(sdp) == 800_000
    assert offered_video_target_bps(sdp.replace("b=TIAS:800000\r\n", "")) == 900_000
    assert offered_video_target_bps("v=0\r\nm=video 9 RTP 96\r\nb=AS:x\r\n") is None
    assert offered_video_target_bps("v=0\r\nm=audio 9 RTP 111\r\nb=AS:64\r\n") is None


@dataclass
class FakePublisher:
    id: str = "pub1"
    room: str = "shop"
    identity: str = "anchor"
    slot: int = 0
    transport: str = "whip"
    live: bool = True
    counters: list[ReceiveCounters] = field(default_factory=list)

    def receive_counters(self) -> ReceiveCounters:
        return self.counters.pop(0)


def test_tracker_scores_each_window_and_reports_changes() -> None:
    changes: list[tuple[str, int, float]] = []
    quality = PublisherQuality(lambda p, s, w: changes.append((p.identity, s, w.loss)))
    steps = [(300, 0), (300, 0), (300, 30), (300, 30), (300, 0), (300, 0)]
    counters, expected, received = [], 0, 0
    for sent, lost in [(0, 0), *steps]:
        expected, received = expected + sent, received + sent - lost
        counters.append(ReceiveCounters(expected, received, expected * 1000, 3.0))
    publisher = FakePublisher(counters=counters)
    for second in range(0, 2 * len(counters), 1):  # ticks every second, windows every 2 s
        quality.tick(float(second), [publisher])
    assert publisher.counters == []
    assert [c[1] for c in changes] == [EXCELLENT, POOR, EXCELLENT]
    assert changes[1][2] == pytest.approx(0.10)
    lines = quality.metrics()
    assert 'shopcast_publisher_network_quality{door="whip",score="5"} 1' in lines
    assert 'shopcast_publisher_network_quality_score_count{door="whip"} 6' in lines
    assert 'shopcast_publisher_network_quality_score_bucket{door="whip",le="2"} 3' in lines
    quality.tick(100.0, [])  # the publisher left: no current score
    assert quality.score("pub1") is None
    assert 'shopcast_publisher_network_quality{door="whip",score="5"} 0' in quality.metrics()


def test_page_step_down_in_node() -> None:
    """The anchor page's step down (web/js/network_quality.js): bitrate halves to its floor,
    then the resolution halves to its floor, then nothing is left; its WHIP offer names the
    encoder's target as b=TIAS in video sections that name none."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run ./dev setup")
    module = (Path(__file__).parent.parent / "web" / "js" / "network_quality.js").as_uri()
    code = f"""import {{ stepDownEncoding, withVideoTarget }} from "{module}";
      const offer = "v=0\\r\\nm=audio 9 X 111\\r\\nc=IN IP4 0.0.0.0\\r\\na=mid:0\\r\\n" +
        "m=video 9 X 96\\r\\nc=IN IP4 0.0.0.0\\r\\na=mid:1\\r\\n" +
        "m=video 9 X 96\\r\\nb=AS:300\\r\\na=mid:2\\r\\n";
      const steps = [];
      let enc = {{ maxBitrate: 800000 }};
      while (enc && steps.length < 20) {{ steps.push(enc); enc = stepDownEncoding(enc, 1); }}
      console.log(JSON.stringify([steps, stepDownEncoding({{}}, 600000),
                                  withVideoTarget(offer, 800000)]));"""
    done = subprocess.run([node, "--input-type=module", "-e", code], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    steps, from_fallback, sdp = json.loads(done.stdout)
    assert sdp == ("v=0\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
                   "m=video 9 X 96\r\nc=IN IP4 0.0.0.0\r\nb=TIAS:800000\r\na=mid:1\r\n"
                   "m=video 9 X 96\r\nb=AS:300\r\na=mid:2\r\n")
    assert offered_video_target_bps(sdp) == 800_000
    assert [s["maxBitrate"] for s in steps] == [800_000, 400_000, 200_000, 150_000, 150_000,
                                                150_000]
    assert [s.get("scaleResolutionDownBy", 1) for s in steps] == [1, 1, 1, 1, 2, 4]
    assert from_fallback == {"maxBitrate": 300_000}


# --- end to end on both backends: a real aiortc anchor, the room's events, /metrics ----------


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


@pytest.mark.slow
async def test_anchor_score_reaches_the_room_and_metrics(server: Any) -> None:
    """An aiortc anchor on loopback gets a score in a `network_quality` event on /ws/events
    within two windows, and /metrics counts it; a client cannot send one (it is a server
    event): refused with an error to that client."""
    room = "nq"
    admin = await WsClient.open(server.url, room, server.token(room, "ops", "admin"))
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    try:
        assert (await admin.next())["type"] == "state"
        scored = await admin.until("network_quality", wait_s=15.0)
        assert (scored["identity"], scored["slot"]) == ("anchor", 0)
        assert DOWN <= scored["score"] <= EXCELLENT
        assert 0.0 <= scored["loss"] <= 1.0 and scored["bitrate_kbps"] >= 0
        node = server.app[NODE_KEY]
        assert node.network_quality.score(next(iter(node.rooms[room].publishers))) is not None
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            text = await resp.text()
        per_score = [int(line.split()[-1]) for line in text.splitlines()
                     if line.startswith('shopcast_publisher_network_quality{door="whip"')]
        assert len(per_score) == 6 and sum(per_score) == 1  # one publisher, one score
        windows = next(line for line in text.splitlines() if line.startswith(
            'shopcast_publisher_network_quality_score_count{door="whip"}'))
        assert int(windows.split()[-1]) >= 1

        forger = await WsClient.open(server.url, room, server.token(room, "eve", "subscribe"))
        assert (await forger.next())["type"] == "state"
        await forger.send(type="network_quality", identity="anchor", slot=0, score=0, loss=1.0,
                          jitter_ms=0, bitrate_kbps=0)
        refused = await forger.until("error")
        assert refused["code"] == "unknown_type"
        await forger.close()
    finally:
        await anchor.close()
        await admin.close()
