"""FLV pieces without the network: depacketizing, muxing, the GOP cache and reader policy.

Media is real (libx264 / libvpx / libopus through aiortc's packetizers into real Producers);
the output is checked with ffprobe and decoded with PyAV.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import pytest
from flv_helpers import (
    FakeTransport,
    Feeder,
    ffprobe,
    h264_frames,
    h264_payloads,
    opus_packets,
    tags,
    vp8_frames,
    vp8_payloads,
)

from sfu.flv.depacketizer import H264Depacketizer, split_annexb
from sfu.flv.gop_cache import Entry, TagLog
from sfu.flv.muxer import TAG_AUDIO, TAG_VIDEO
from sfu.flv.output import RoomFlvOutput
from sfu.flv.viewer_queue import FlvReader
from sfu.settings import FlvSettings


def canonical(payloads: list[bytes], seq: int, ts: int) -> list[bytes]:
    out = []
    for i, p in enumerate(payloads):
        marker = 0x80 if i == len(payloads) - 1 else 0
        out.append(bytes((0x80, marker | 102)) + ((seq + i) & 0xFFFF).to_bytes(2, "big")
                   + ts.to_bytes(4, "big") + b"\0\0\0\1" + p)
    return out


def test_h264_depacketizer_rebuilds_access_units_and_waits_for_a_keyframe_after_loss() -> None:
    frames = h264_frames(40, gop=20)
    losses: list[int] = []
    depack = H264Depacketizer(on_loss=lambda: losses.append(1))
    seq, out = 65500, []  # wraps around 65535
    for i, (au, _key) in enumerate(frames):
        packets = canonical(h264_payloads(au), seq, i * 3000)
        seq += len(packets)
        if i == 5:
            packets = packets[1:]  # lose the first packet of frame 5
        for p in packets:
            out.extend(depack.push(p))
    assert out[0].keyframe and out[0].sps and out[0].pps
    assert split_annexb(out[0].data) == [n for n in split_annexb(frames[0][0]) if n[0] & 0x1F != 9]
    assert [f.timestamp // 3000 for f in out] == [0, 1, 2, 3, 4, *range(20, 40)]
    assert losses == [1] and depack.lost == 1


def test_tag_log_keeps_the_gop_and_forgets_what_no_budget_wants() -> None:
    log = TagLog(keep_ms=1000)
    for i in range(100):  # 10 s of 100 ms tags, a keyframe every 4 s
        log.append(Entry(b"x", i * 100, keyframe=i % 40 == 0))
        log.trim()
    assert log.latest_keyframe() == 80 and log.start == 80  # the GOP is longer than keep_ms
    assert log.gop_age_ms() == 1900


async def feed_room(output_settings: FlvSettings, seconds: float, video: str = "h264",
                    join_at: float = 0.0) -> tuple[RoomFlvOutput, FakeTransport, FlvReader | None]:
    """Publish `seconds` of video + audio into an output; a reader joins at `join_at`."""
    v, a = Feeder.make("video", video), Feeder.make("audio", "opus")
    output = RoomFlvOutput("room1", [v.producer, a.producer], output_settings)
    count = int(seconds * 30)
    frames = h264_frames(count, gop=30) if video == "h264" else vp8_frames(count)
    opus = opus_packets(int(seconds * 50))
    transport, reader = FakeTransport(), None
    for i, (data, _key) in enumerate(frames):
        if reader is None and i >= join_at * 30:
            reader = output.add_reader(transport, lambda r: None)
        payloads = h264_payloads(data) if video == "h264" else vp8_payloads(data, i)
        v.send(payloads, 5000 + i * 3000)
        while a.seq - 1000 < len(opus) and (a.seq - 1000) * 20 <= i * 1000 // 30:
            a.send([opus[a.seq - 1000]], 777 + (a.seq - 1000) * 960)
        if i % 3 == 0:
            await asyncio.sleep(0.02)  # let the codec thread deliver AAC
            if reader is not None:
                reader.flush()
    await asyncio.sleep(0.3)
    if reader is not None:
        reader.flush()
    return output, transport, reader


async def test_output_is_h264_and_aac_that_ffprobe_reads_and_pyav_decodes(tmp_path: Path) -> None:
    output, transport, reader = await feed_room(FlvSettings(), 3.0)
    output.close()
    body = transport.body()
    path = tmp_path / "out.flv"
    path.write_bytes(body)
    streams = {s["codec_type"]: s for s in ffprobe(str(path))["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert streams["audio"]["codec_name"] == "aac"
    assert streams["audio"]["sample_rate"] == "48000"
    container = av.open(io.BytesIO(body), format="flv")
    video = audio = 0
    for frame in container.decode(video=0, audio=0):
        if isinstance(frame, av.VideoFrame):
            video += 1
        else:
            audio += 1
    assert video >= 85 and audio >= 130  # 3 s: 90 frames, ~140 AAC frames
    assert reader is not None and reader.skips == 0


async def test_late_joiner_starts_at_the_cached_keyframe() -> None:
    output, transport, reader = await feed_room(FlvSettings(), 2.5, join_at=1.5)
    output.close()
    assert reader is not None and reader.joined_from_cache
    body = transport.body()
    media = [(kind, ts, data) for kind, ts, data in tags(body) if data[1] != 0]
    first_video = next(d for k, _, d in media if k == TAG_VIDEO)
    assert media[0][0] == TAG_VIDEO and first_video[0] >> 4 == 1  # keyframe first
    headers = [k for k, _, d in tags(body) if d[1] == 0]
    assert headers[:2] == [TAG_VIDEO, TAG_AUDIO]


async def test_slow_reader_skips_to_a_keyframe_then_stuck_reader_is_dropped() -> None:
    settings = FlvSettings(latency_budget_ms=500, stuck_timeout_ms=200)
    v = Feeder.make("video", "h264")
    output = RoomFlvOutput("room1", [v.producer], settings)
    transport, closed = FakeTransport(), []
    frames = h264_frames(90, gop=15)
    reader = output.add_reader(transport, closed.append)
    for i, (data, _key) in enumerate(frames[:30]):
        v.send(h264_payloads(data), i * 3000)
    reader.flush()
    sent = len(transport.chunks)
    transport.buffered = 10_000  # the socket stops draining
    for i, (data, _key) in enumerate(frames[30:60], start=30):
        v.send(h264_payloads(data), i * 3000)
        reader.flush()
    assert len(transport.chunks) == sent  # nothing more queued into a full socket
    assert reader.skips >= 1 and reader.backlog_ms() > 500  # the lag is in flight
    transport.buffered = 0  # it drains again: the next write starts at a keyframe
    reader.flush()
    assert reader.backlog_ms() <= 500
    written = transport.chunks[-1].partition(b"\r\n")[2]
    assert written[11] >> 4 == 1  # the first tag after the skip is a keyframe
    transport.buffered = 5000
    reader.flush()
    await asyncio.sleep(0.25)
    reader.flush()
    assert reader.closed and reader.close_reason == "stuck" and transport.aborted
    assert closed == [reader] and reader not in output.readers
    output.close()


async def test_resolution_change_sends_a_new_sequence_header(tmp_path: Path) -> None:
    v = Feeder.make("video", "h264")
    output = RoomFlvOutput("room1", [v.producer], FlvSettings())
    transport = FakeTransport()
    reader = output.add_reader(transport, lambda r: None)
    frames = h264_frames(30, size=(640, 360)) + h264_frames(30, size=(320, 180), start=30)
    for i, (data, _key) in enumerate(frames):
        v.send(h264_payloads(data), i * 3000)
        reader.flush()
    output.close()
    body = transport.body()
    configs = [ts for kind, ts, d in tags(body) if kind == TAG_VIDEO and d[1] == 0]
    assert len(configs) == 2 and configs[1] == 1000
    sizes = {(f.width, f.height) for f in av.open(io.BytesIO(body), format="flv").decode(video=0)}
    assert sizes == {(640, 360), (320, 180)}


@pytest.mark.slow
async def test_vp8_anchor_is_transcoded_to_h264_once(tmp_path: Path) -> None:
    output, transport, reader = await feed_room(FlvSettings(), 2.0, video="vp8")
    await asyncio.sleep(0.3)
    assert reader is not None
    reader.flush()
    output.close()
    path = tmp_path / "vp8.flv"
    path.write_bytes(transport.body())
    streams = {s["codec_type"]: s for s in ffprobe(str(path))["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["video"]["width"] == 640
    assert streams["audio"]["codec_name"] == "aac"
    decoded = list(av.open(str(path)).decode(video=0))
    assert len(decoded) >= 50
