"""Producer -> Consumer forwarding without a network: header mapping, keyframe gate, NACK
answers from the shared history, the keyframe-request throttle and the SR mapping."""

from __future__ import annotations

import asyncio
import struct

from aiortc import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_PLI, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpRtpfbPacket, RtpPacket

from sfu.consumer import Consumer
from sfu.producer import Producer

H264 = RTCRtpCodecParameters(
    mimeType="video/H264", clockRate=90000, payloadType=102,
    parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
SPS = bytes([0x67, 0x42, 0xE0, 0x1F])
SLICE = bytes([0x41, 0x9A, 0x02])


class Wire:
    """Stands in for SRTP + UDP: records what a consumer would send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def protect(self, data: bytes) -> bytes:
        return data

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def make_producer(codec: RTCRtpCodecParameters = H264) -> tuple[Producer, list[int]]:
    requests: list[int] = []
    kind = "video" if codec.mimeType.startswith("video") else "audio"
    producer = Producer(
        kind, codec, publisher_id="p1", request_keyframe=requests.append, keyframe_throttle_s=0.5
    )
    return producer, requests


def rtp(seq: int, payload: bytes, marker: int = 0, ts: int = 9000, ssrc: int = 777) -> RtpPacket:
    return RtpPacket(
        payload_type=102, marker=marker, sequence_number=seq, timestamp=ts, ssrc=ssrc,
        payload=payload,
    )


def header(data: bytes) -> tuple[int, int, int, int, int]:
    first, m_pt, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
    return first, m_pt, seq, ts, ssrc


def test_canonical_packet_keeps_sequence_and_timestamp_with_our_ssrc() -> None:
    producer, _ = make_producer()
    wire = Wire()
    producer.attach(Consumer(producer, 102, "v1", wire.protect, wire.send))
    producer.ingest(rtp(100, SPS, marker=1, ts=123456))
    first, m_pt, seq, ts, ssrc = header(wire.sent[0])
    assert (first, m_pt, seq, ts, ssrc) == (0x80, 0x80 | 102, 100, 123456, producer.ssrc)
    assert wire.sent[0][12:] == SPS


def test_payload_type_is_rewritten_per_viewer_and_marker_bit_survives() -> None:
    producer, _ = make_producer()
    same, other = Wire(), Wire()
    producer.attach(Consumer(producer, 102, "same", same.protect, same.send))
    producer.attach(Consumer(producer, 98, "other", other.protect, other.send))
    producer.ingest(rtp(1, SPS, marker=1))
    producer.ingest(rtp(2, SLICE, marker=0))
    assert [header(p)[1] for p in same.sent] == [0x80 | 102, 102]
    assert [header(p)[1] for p in other.sent] == [0x80 | 98, 98]
    assert same.sent[0][2:] == other.sent[0][2:]  # everything after the PT byte is shared


def test_video_viewer_starts_at_a_keyframe_audio_at_once() -> None:
    video, _ = make_producer()
    wire = Wire()
    video.attach(Consumer(video, 102, "v", wire.protect, wire.send))
    video.ingest(rtp(1, SLICE))
    video.ingest(rtp(2, SLICE))
    assert wire.sent == []
    video.ingest(rtp(3, SPS))
    video.ingest(rtp(4, SLICE))
    assert [header(p)[2] for p in wire.sent] == [3, 4]

    audio, _ = make_producer(OPUS)
    awire = Wire()
    audio.attach(Consumer(audio, 111, "v", awire.protect, awire.send))
    audio.ingest(RtpPacket(payload_type=111, sequence_number=5, ssrc=9, payload=b"\x01"))
    assert len(awire.sent) == 1


async def test_nack_is_answered_from_the_shared_history() -> None:
    producer, _ = make_producer()
    wire = Wire()
    consumer = Consumer(producer, 102, "v", wire.protect, wire.send)
    producer.attach(consumer)
    for seq in range(10, 20):
        producer.ingest(rtp(seq, SPS if seq == 10 else SLICE))
    wire.sent.clear()
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=producer.ssrc)
    nack.lost = [12, 15, 5000]  # 5000 was never sent
    await consumer.handle_rtcp(nack)
    assert [header(p)[2] for p in wire.sent] == [12, 15]
    assert consumer.retransmits == 2


async def test_viewer_pli_goes_upstream_through_the_throttle() -> None:
    producer, requests = make_producer()
    wire = Wire()
    consumer = Consumer(producer, 102, "v", wire.protect, wire.send)
    producer.attach(consumer)  # asks before any packet: remembered
    assert requests == []
    producer.ingest(rtp(1, SLICE, ssrc=4242))  # first packet: the pending request goes out
    assert requests == [4242]
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=producer.ssrc)
    for _ in range(20):
        await consumer.handle_rtcp(pli)
    assert requests == [4242]  # throttled: within 500 ms of the last request
    assert consumer.plis == 20
    await asyncio.sleep(0.6)
    assert requests == [4242, 4242]  # ...but deferred to the end of the interval, not dropped
    await asyncio.sleep(0.6)
    assert requests == [4242, 4242]  # and only once


def test_sender_report_repeats_the_publisher_mapping() -> None:
    producer, _ = make_producer()
    producer.ingest(rtp(1, SPS, ts=5000))
    ntp, ts = producer.sender_report()
    assert ts == 5000 and ntp > 0  # before the publisher's SR: now / last timestamp
    producer.on_sender_report(0x1234_5678_9ABC_DEF0, 4242)
    assert producer.sender_report() == (0x1234_5678_9ABC_DEF0, 4242)


def test_closing_stops_forwarding_and_returns_consumers() -> None:
    producer, _ = make_producer()
    wire = Wire()
    consumer = Consumer(producer, 102, "v", wire.protect, wire.send)
    producer.attach(consumer)
    assert producer.close() == [consumer]
    producer.ingest(rtp(1, SPS))
    assert wire.sent == []


def test_a_slot_taken_over_by_a_new_publisher_continues_sequence_and_timestamp() -> None:
    """Viewers keep one stream per slot: the next publisher continues where the last stopped."""
    first, _ = make_producer()
    wire = Wire()
    first.attach(Consumer(first, 102, "v", wire.protect, wire.send))
    first.ingest(rtp(500, SPS, ts=1_000))
    first.ingest(rtp(501, SLICE, ts=4_000))
    first.close()
    second = Producer("video", H264, publisher_id="p2", request_keyframe=lambda _s: None,
                      slot=first.slot)
    second.attach(Consumer(second, 102, "v", wire.protect, wire.send))
    second.ingest(rtp(9, SPS, ts=70_000, ssrc=999))  # a different publisher's numbering
    second.ingest(rtp(10, SLICE, ts=73_000, ssrc=999))
    seqs = [header(p)[2] for p in wire.sent]
    stamps = [header(p)[3] for p in wire.sent]
    assert seqs == [500, 501, 502, 503]
    assert stamps[2] > stamps[1] and stamps[3] - stamps[2] == 3_000
    assert {header(p)[4] for p in wire.sent} == {first.ssrc}  # one SSRC for the slot


def test_a_viewers_sender_reports_go_out_as_one_compound_packet() -> None:
    """One SR per consumer that sent something (publisher's NTP/RTP mapping, our counts), then
    one SDES with a CNAME per source; a consumer that sent nothing is left out."""
    from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSrPacket

    from sfu.sender_reports import SenderReports

    video, _ = make_producer()
    audio, _ = make_producer(OPUS)
    idle, _ = make_producer()
    video.on_sender_report(0x1234_5678_0000_0000, 90_000)
    wire, rtcp = Wire(), Wire()
    consumers = [Consumer(p, p.payload_type, "v", wire.protect, wire.send)
                 for p in (video, audio, idle)]
    for producer, consumer in zip((video, audio), consumers, strict=False):
        producer.attach(consumer)
        producer.ingest(rtp(1, SPS + SLICE, marker=1))
    reports = SenderReports(rtcp.protect, rtcp.send, "cname-1")
    reports.send(consumers)
    [packet] = rtcp.sent
    parsed = RtcpPacket.parse(packet)
    assert [type(p) for p in parsed] == [RtcpSrPacket, RtcpSrPacket, RtcpSdesPacket]
    sr_video, sr_audio, sdes = parsed
    assert (sr_video.ssrc, sr_audio.ssrc) == (video.ssrc, audio.ssrc)
    assert sr_video.sender_info.ntp_timestamp == 0x1234_5678_0000_0000
    assert sr_video.sender_info.rtp_timestamp == 90_000
    assert sr_video.sender_info.packet_count == consumers[0].packets == 1
    assert [c.ssrc for c in sdes.chunks] == [video.ssrc, audio.ssrc]
    assert sdes.chunks[0].items == [(1, b"cname-1")]
    reports.send([consumers[2]])  # nothing sent yet: no report
    assert len(rtcp.sent) == 1
