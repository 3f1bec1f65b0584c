"""The lazy receive-rate counter counts exactly like aiortc's, and a send-only transceiver's
receiver (every viewer has several) never builds its buckets."""

from __future__ import annotations

import random

from aiortc import RTCPeerConnection, rate

from sfu.aiortc_private import LazyRateCounter, install_lazy_rate_counter

ORIGINAL = LazyRateCounter.__bases__[0]  # aiortc's own, whether installed or not


def test_counts_like_aiortcs_counter() -> None:
    rng = random.Random(7)
    theirs, ours = ORIGINAL(1000, 8000), LazyRateCounter(1000, 8000)
    now = 10_000
    for _ in range(3000):
        now += rng.choice((0, 1, 3, 10, 40, 700, 1500))
        size = rng.randrange(100, 1300)
        theirs.add(size, now)
        ours.add(size, now)
        assert ours.rate(now) == theirs.rate(now)
    ours.reset()
    theirs.reset()
    assert ours.rate(now) is None and theirs.rate(now) is None


async def test_a_viewers_send_only_receivers_build_no_buckets() -> None:
    install_lazy_rate_counter()
    assert rate.RateCounter is LazyRateCounter
    pc = RTCPeerConnection()
    try:
        for _ in range(4):
            pc.addTransceiver("video", direction="sendonly")
        estimators = [t.receiver._RTCRtpReceiver__remote_bitrate_estimator
                      for t in pc.getTransceivers()]
        assert all(e.incoming_bitrate._buckets is None for e in estimators)
    finally:
        await pc.close()
