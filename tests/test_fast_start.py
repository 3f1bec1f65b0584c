"""A joining WebRTC viewer starts from the cached keyframe instead of waiting for a new one:
what it is sent (keyframe first, every packet since, frames re-stamped 1 ms apart ending at the
newest timestamp, then live), when the cache is not used, and what it asks upstream."""

from __future__ import annotations

import time

from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket
from test_forwarding_unit import H264, OPUS, SLICE, SPS, Wire, header, make_producer, rtp

from sfu.consumer import Consumer
from sfu.producer import FAST_START_PACKETS, Producer

FRAME_TICKS = 3000  # 30 fps at 90 kHz


def gop(producer: Producer, first_seq: int, frames: int, packets_per_frame: int = 3,
        ts: int = 90000) -> int:
    """A keyframe (SPS first) and ``frames - 1`` delta frames; returns the next sequence number."""
    seq = first_seq
    for frame in range(frames):
        for part in range(packets_per_frame):
            payload = SPS if frame == 0 and part == 0 else SLICE
            producer.ingest(rtp(seq & 0xFFFF, payload, marker=int(part == packets_per_frame - 1),
                                ts=ts + frame * FRAME_TICKS))
            seq += 1
    return seq


def joined(producer: Producer) -> tuple[Consumer, Wire]:
    wire = Wire()
    consumer = Consumer(producer, 102, "late", wire.protect, wire.send)
    producer.attach_viewer(consumer)
    return consumer, wire


def test_a_late_viewer_gets_the_keyframe_and_what_followed_at_once() -> None:
    producer, requests = make_producer()
    producer.ingest(rtp(1, SLICE, ssrc=777))  # the source is known: requests go out
    requests.clear()
    nxt = gop(producer, 10, frames=4)
    consumer, wire = joined(producer)
    assert [header(p)[2] for p in wire.sent] == list(range(10, nxt))
    assert wire.sent[0][12:] == SPS
    newest = 90000 + 3 * FRAME_TICKS
    stamps = [header(p)[3] for p in wire.sent]
    assert stamps == [newest - 3 * 90] * 3 + [newest - 2 * 90] * 3 + [newest - 90] * 3 + [
        newest] * 3
    assert requests == []  # the cached keyframe is fresh: nobody asks the anchor for one
    assert producer.fast_starts == 1 and consumer.started and consumer.packets == 12
    producer.ingest(rtp(nxt, SLICE, ts=newest + FRAME_TICKS))
    assert header(wire.sent[-1])[2:4] == (nxt, newest + FRAME_TICKS)  # then live, unchanged


def test_the_payload_type_is_mapped_in_a_fast_start_too() -> None:
    producer, _ = make_producer()
    gop(producer, 10, frames=2)
    wire = Wire()
    producer.attach_viewer(Consumer(producer, 98, "v", wire.protect, wire.send))
    assert {header(p)[1] & 0x7F for p in wire.sent} == {98}


def test_no_fast_start_without_a_whole_recent_gop() -> None:
    stale, requests = make_producer()
    gop(stale, 10, frames=2)
    stale._gop_at = time.monotonic() - 1.5  # older than the 1 s window
    _, wire = joined(stale)
    assert wire.sent == [] and requests  # waits for the keyframe it asked for

    holed, requests = make_producer()
    nxt = gop(holed, 10, frames=2)
    holed.history._slots[12 & 1023] = None  # one packet of the GOP never made it
    _, wire = joined(holed)
    assert wire.sent == [] and requests
    assert nxt == 16

    long_gop, _ = make_producer()
    gop(long_gop, 10, frames=FAST_START_PACKETS // 3 + 2)
    _, wire = joined(long_gop)
    assert wire.sent == []

    off = Producer("video", H264, publisher_id="p", request_keyframe=lambda _: None,
                   fast_start_s=0)
    gop(off, 10, frames=2)
    _, wire = joined(off)
    assert wire.sent == []


def test_a_cached_keyframe_older_than_the_throttle_still_asks_for_a_new_one() -> None:
    producer, requests = make_producer()
    producer.ingest(rtp(1, SLICE, ssrc=777))
    requests.clear()
    gop(producer, 10, frames=2)
    producer._gop_at = time.monotonic() - 0.7  # inside the fast-start window, past 500 ms
    _, wire = joined(producer)
    assert wire.sent and requests == [777]  # started at once, and the next joiner's is fresher


def test_sequence_numbers_wrap_inside_a_fast_start() -> None:
    producer, _ = make_producer()
    nxt = gop(producer, 65533, frames=2)
    _, wire = joined(producer)
    assert [header(p)[2] for p in wire.sent] == [s & 0xFFFF for s in range(65533, nxt)]


async def test_nacks_for_re_stamped_packets_are_not_resent() -> None:
    producer, _ = make_producer()
    gop(producer, 10, frames=3)
    consumer, wire = joined(producer)
    wire.sent.clear()
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=producer.ssrc)
    nack.lost = [10, 15, 16, 18]  # 10..15 were re-stamped; 16..18 are the newest frame
    await consumer.handle_rtcp(nack)
    assert [header(p)[2] for p in wire.sent] == [16, 18]


def test_audio_is_never_replayed() -> None:
    audio, _ = make_producer(OPUS)
    audio.ingest(rtp(1, b"\x01"))
    _, wire = joined(audio)
    assert wire.sent == []


def test_the_gop_starts_at_the_keyframes_first_packet_not_its_last_slice() -> None:
    producer, _ = make_producer()
    idr_start = bytes([0x7C, 0x85, 0x00])  # FU-A, start bit, IDR slice
    producer.ingest(rtp(10, SPS, ts=90000))
    producer.ingest(rtp(11, idr_start, ts=90000))
    producer.ingest(rtp(12, idr_start, ts=90000, marker=1))  # a second IDR slice
    producer.ingest(rtp(13, SLICE, ts=93000, marker=1))
    _, wire = joined(producer)
    assert [header(p)[2] for p in wire.sent] == [10, 11, 12, 13]
    assert producer.keyframes == 1  # pictures, not flagged packets


def test_a_worker_mirror_leaves_the_throttle_to_the_publishers_process() -> None:
    requests: list[int] = []
    mirror = Producer("video", H264, publisher_id="p", request_keyframe=requests.append,
                      keyframe_throttle_s=0.5, mirror=True)
    for _ in range(3):
        mirror.request_keyframe()
    assert len(requests) == 3  # each goes to the real producer, whose throttle applies once


def test_a_negotiating_viewer_gets_a_keyframe_asked_for_unless_one_is_fresh() -> None:
    producer, requests = make_producer()
    producer.ingest(rtp(1, SLICE, ssrc=777))
    requests.clear()
    producer.expect_viewer()  # nothing cached: ask now, the keyframe is there at connection
    assert requests == [777]
    gop(producer, 10, frames=2)
    producer._last_keyframe_request = -1e9  # the throttle is not what is tested here
    requests.clear()
    producer.expect_viewer()  # a keyframe of a moment ago will still be fresh
    assert requests == []
    producer._gop_at = time.monotonic() - 0.6
    producer.expect_viewer()
    assert requests == [777]

    off = Producer("video", H264, publisher_id="p", request_keyframe=requests.append,
                   fast_start_s=0)
    off.ingest(rtp(1, SLICE, ssrc=5))
    requests.clear()
    off.expect_viewer()  # without fast start the viewer asks when it connects, as before
    assert requests == []
