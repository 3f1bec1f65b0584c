"""RTMP ingest media conversions on real encoder output: FLV tags, AVC headers, RTP packetizing.

The inputs are FLV files made by the ffmpeg CLI (libx264 High with and without B-frames, AAC),
read tag by tag as an RTMP server receives them. The packetizer's output goes through the
repo's own depacketizer and PyAV's H.264 decoder, and must give back the very same pictures.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from sfu.errors import MalformedMedia, MediaError, UnsupportedCodec
from sfu.flv.depacketizer import H264Depacketizer
from sfu.rtmp.avc import (
    AvcConfig,
    is_disposable,
    nal_ref_idc,
    nal_type,
    slice_type,
    split_avcc,
    sps_dimensions,
)
from sfu.rtmp.flv_tags import (
    AAC_RAW,
    AAC_SEQUENCE_HEADER,
    AVC_END_OF_SEQUENCE,
    AVC_NALU,
    AVC_SEQUENCE_HEADER,
    CODEC_AVC,
    SOUND_AAC,
    VideoTag,
    parse_audio_tag,
    parse_video_tag,
)
from sfu.rtmp.packetizer import H264Packetizer

TAG_AUDIO = 8
TAG_VIDEO = 9
FRAMES = 60  # 2 s at 30 fps
MTU = 1200
PICTURE_TYPES = {1: "I", 2: "P", 3: "B", 5: "SI", 6: "SP"}  # AVPictureType


def tags(flv: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(tag type, timestamp ms, body) of each tag of an FLV file, as RTMP messages carry them."""
    assert flv[:3] == b"FLV"
    pos = int.from_bytes(flv[5:9], "big") + 4
    while pos + 11 <= len(flv):
        size = int.from_bytes(flv[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(flv[pos + 4 : pos + 7], "big") | (flv[pos + 7] << 24)
        yield flv[pos], timestamp, flv[pos + 11 : pos + 11 + size]
        pos += 11 + size + 4
    assert pos == len(flv)


def ffmpeg(path: Path, *args: str) -> bytes:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args, str(path)],
                   check=True, timeout=60)
    return path.read_bytes()


def x264_flv(path: Path, bframes: int, size: str, bitrate: str) -> bytes:
    return ffmpeg(
        path, "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-t", "2", "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast",
        "-bf", str(bframes), "-g", "30", "-b:v", bitrate, "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-f", "flv",
    )


@dataclass
class Stream:
    """One FLV file's tags, parsed: what an RTMP server hands the media code."""

    path: Path
    config: AvcConfig
    video: list[tuple[int, VideoTag]]  # (dts ms, tag) of the NALU tags
    audio_config: bytes
    audio: list[tuple[int, bytes]]
    ends: int  # end-of-sequence tags


def parse_stream(path: Path) -> Stream:
    config = None
    audio_config = b""
    video: list[tuple[int, VideoTag]] = []
    audio: list[tuple[int, bytes]] = []
    ends = 0
    for kind, ts, body in tags(path.read_bytes()):
        if kind == TAG_VIDEO:
            tag = parse_video_tag(body)
            assert tag is not None and tag.codec_id == CODEC_AVC
            if tag.avc_packet_type == AVC_SEQUENCE_HEADER:
                config = AvcConfig.parse(tag.data)
            elif tag.avc_packet_type == AVC_NALU:
                video.append((ts, tag))
            else:
                assert tag.avc_packet_type == AVC_END_OF_SEQUENCE
                ends += 1
        elif kind == TAG_AUDIO:
            atag = parse_audio_tag(body)
            assert atag is not None and atag.sound_format == SOUND_AAC
            if atag.aac_packet_type == AAC_SEQUENCE_HEADER:
                audio_config = atag.data
            else:
                assert atag.aac_packet_type == AAC_RAW
                audio.append((ts, atag.data))
    assert config is not None
    return Stream(path, config, video, audio_config, audio, ends)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Stream]:
    base = tmp_path_factory.mktemp("rtmp_media")
    x264_flv(base / "bf2.flv", 2, "320x240", "600k")
    x264_flv(base / "bf0.flv", 0, "640x360", "4M")  # high bitrate: keyframes need FU-A
    return {name: parse_stream(base / f"{name}.flv") for name in ("bf2", "bf0")}


def annexb(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


def decoded_pictures(path: Path) -> tuple[dict[int, str], list[str]]:
    """PyAV's own reading of the file: picture type by pts (ms), and picture hashes in order."""
    types: dict[int, str] = {}
    hashes: list[str] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            assert frame.pts is not None
            types[int(frame.pts)] = PICTURE_TYPES.get(int(frame.pict_type), "?")
            hashes.append(hashlib.sha1(frame.to_ndarray(format="yuv420p").tobytes()).hexdigest())
    return types, hashes


@pytest.mark.parametrize("name", ["bf2", "bf0"])
def test_every_tag_of_an_ffmpeg_flv_parses(media: dict[str, Stream], name: str) -> None:
    stream = media[name]
    config = stream.config
    assert config.profile_idc == 100  # High
    assert config.profile_level_id.startswith("6400")
    assert config.nal_length_size == 4
    assert len(config.sps) == 1 and nal_type(config.sps[0]) == 7
    assert len(config.pps) == 1 and nal_type(config.pps[0]) == 8
    assert config.sps[0][1] == 100 and config.sps[0][3] == config.level_idc
    with av.open(str(stream.path)) as container:
        context = container.streams.video[0].codec_context
        assert context.profile == "High"
        assert sps_dimensions(config.sps[0]) == (context.width, context.height)
        assert context.level == config.level_idc
    assert len(stream.video) == FRAMES
    assert stream.ends == 1
    assert len(stream.audio) > 80 and len(stream.audio_config) >= 2
    keyframes = [tag for _, tag in stream.video if tag.keyframe]
    assert len(keyframes) >= 2  # -g 30
    # The parameter sets really are the stream's: the first keyframe decodes with them alone.
    decoder = av.CodecContext.create("h264", "r")
    first = split_avcc(keyframes[0].data, config.nal_length_size)
    frames = decoder.decode(av.Packet(annexb([*config.sps, *config.pps, *first])))
    frames += decoder.decode(None)
    assert len(frames) == 1 and frames[0].key_frame


def test_composition_offsets_and_b_slices(media: dict[str, Stream]) -> None:
    for name, has_b in (("bf2", True), ("bf0", False)):
        stream = media[name]
        pict_types, _ = decoded_pictures(stream.path)
        offsets = [tag.composition_time_ms for _, tag in stream.video]
        disposable = 0
        slices: set[str] = set()
        for ts, tag in stream.video:
            nals = split_avcc(tag.data, stream.config.nal_length_size)
            kinds = {slice_type(nal) for nal in nals} - {None}
            assert len(kinds) == 1  # one picture type per access unit (x264, one slice)
            kind = kinds.pop()
            assert kind is not None
            slices.add(kind)
            # the same picture type FFmpeg's decoder reports for this presentation time
            pts = ts + tag.composition_time_ms
            assert pict_types[pts] == kind, (name, ts, kind)
            if is_disposable(nals):
                disposable += 1
                assert kind == "B"
            if tag.keyframe:
                assert kind == "I" and any(nal_type(n) == 5 for n in nals)
                assert all(nal_ref_idc(n) > 0 for n in nals if nal_type(n) == 5)
        if has_b:
            assert any(offset != 0 for offset in offsets)
            assert "B" in slices and disposable > 0
        else:
            assert all(offset == 0 for offset in offsets)
            assert "B" not in slices and disposable == 0
        assert slices >= {"I", "P"}


def rtp(seq: int, timestamp: int, marker: bool, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 102, seq & 0xFFFF,
                       timestamp & 0xFFFFFFFF, 0x1234) + payload


@pytest.mark.parametrize("name", ["bf0", "bf2"])
def test_packetized_frames_reassemble_and_decode_to_the_same_pictures(
        media: dict[str, Stream], name: str) -> None:
    stream = media[name]
    packetizer = H264Packetizer(MTU)
    packetizer.set_parameter_sets(stream.config.sps, stream.config.pps)
    depacketizer = H264Depacketizer()
    decoder = av.CodecContext.create("h264", "r")
    seq = 65000  # wraps during the run
    kinds: set[int] = set()
    hashes: list[str] = []
    reassembled = 0
    for ts, tag in stream.video:
        nals = split_avcc(tag.data, stream.config.nal_length_size)
        payloads = packetizer.packetize(nals, tag.keyframe)
        assert payloads and all(0 < len(p) <= MTU for p in payloads)
        # what the SFU's keyframe detection looks for: SPS (in a STAP-A) opens a keyframe
        starts_with_sps = payloads[0][0] & 0x1F == 24 and payloads[0][3] & 0x1F == 7
        assert starts_with_sps == tag.keyframe
        kinds.update(p[0] & 0x1F for p in payloads)
        timestamp = (ts + tag.composition_time_ms) * 90
        for index, payload in enumerate(payloads):
            frames = depacketizer.push(rtp(seq, timestamp, index == len(payloads) - 1, payload))
            seq += 1
            for frame in frames:
                reassembled += 1
                packet = av.Packet(frame.data)
                packet.pts = frame.timestamp
                for picture in decoder.decode(packet):
                    hashes.append(hashlib.sha1(
                        picture.to_ndarray(format="yuv420p").tobytes()).hexdigest())
    for picture in decoder.decode(None):
        hashes.append(hashlib.sha1(picture.to_ndarray(format="yuv420p").tobytes()).hexdigest())
    assert depacketizer.lost == 0
    assert reassembled == FRAMES
    _, expected = decoded_pictures(stream.path)
    assert len(hashes) == FRAMES
    if name == "bf0":  # decode order is display order: the pictures match one for one
        assert hashes == expected
    else:
        assert sorted(hashes) == sorted(expected)
    assert 24 in kinds and 28 in kinds  # STAP-A (SPS+PPS+SEI) and FU-A (keyframes) both used
    assert kinds <= {1, 5, 6, 24, 28}


def test_packetizer_rules_on_crafted_nals() -> None:
    sps = b"\x67\x64\x00\x1f" + b"\xaa" * 10
    pps = b"\x68\xee\x3c\x80"
    aud = b"\x09\xf0"
    filler = b"\x0c" + b"\xff" * 50
    idr = b"\x65" + bytes(range(256)) * 20  # 5121 bytes, NRI 3
    slice_p = b"\x41" + b"\x11" * 300  # NRI 2
    packetizer = H264Packetizer(1200)
    packetizer.set_parameter_sets([sps], [pps])

    # A keyframe without in-band parameter sets gets the remembered ones, first, in a STAP-A.
    out = packetizer.packetize([aud, idr, filler], keyframe=True)
    assert out[0][0] == 0x78  # STAP-A with NRI 3
    assert out[0][1:3] == len(sps).to_bytes(2, "big") and out[0][3:3 + len(sps)] == sps
    assert out[0].endswith(len(pps).to_bytes(2, "big") + pps)
    fragments = out[1:]
    assert len(fragments) == 5 and all(len(p) <= 1200 for p in fragments)
    assert all(p[0] == 0x7C for p in fragments)  # FU indicator: NRI 3, type 28
    assert [p[1] for p in fragments] == [0x85, 0x05, 0x05, 0x05, 0x45]
    assert max(len(p) for p in fragments) - min(len(p) for p in fragments) <= 1
    assert b"\x65" + b"".join(p[2:] for p in fragments) == idr

    # A P-frame: AUD dropped, one single NAL packet, nothing prepended.
    assert packetizer.packetize([aud, slice_p], keyframe=False) == [slice_p]

    # In-band parameter sets are used as they are and remembered for the next keyframe.
    sps2 = b"\x67\x42\xc0\x1e" + b"\xbb" * 8
    out = packetizer.packetize([sps2, pps, idr[:100]], keyframe=True)
    assert len(out) == 1 and out[0][0] == 0x78 and sps not in out[0] and sps2 in out[0]
    out = packetizer.packetize([idr[:100]], keyframe=True)
    assert sps2 in out[0] and pps in out[0]

    # Boundaries: a NAL of exactly the MTU goes whole, one byte more is fragmented in two.
    exact = b"\x41" + b"\x22" * 1199
    assert packetizer.packetize([exact], keyframe=False) == [exact]
    over = exact + b"\x33"
    two = packetizer.packetize([over], keyframe=False)
    assert len(two) == 2 and two[0][1] == 0x81 and two[1][1] == 0x41
    # Aggregation stops at the MTU: two NALs that do not fit together go separately.
    half = b"\x41" + b"\x44" * 600
    assert packetizer.packetize([half, half], keyframe=False) == [half, half]
    small = [b"\x06\x05" + b"\x01" * 10, b"\x01" + b"\x02" * 20]  # SEI + non-reference slice
    stap = packetizer.packetize(small, keyframe=False)
    assert len(stap) == 1 and stap[0][0] == 0x18  # STAP-A, NRI 0 (the highest of the two)
    assert packetizer.packetize([], keyframe=False) == []

    for mtu in (100, 500, 1400):
        chopped = H264Packetizer(mtu).packetize([idr, slice_p, sps], keyframe=False)
        assert all(len(p) <= mtu for p in chopped)


def test_packetizer_speed(media: dict[str, Stream]) -> None:
    """Informative: microseconds per access unit (best of a few rounds: the machine is shared)."""
    stream = media["bf0"]
    packetizer = H264Packetizer(MTU)
    packetizer.set_parameter_sets(stream.config.sps, stream.config.pps)
    units = [(split_avcc(tag.data, 4), tag.keyframe) for _, tag in stream.video]
    packets = sum(len(packetizer.packetize(nals, key)) for nals, key in units)
    typical = [b"\x41" + random.Random(7).randbytes(11_500)]  # a 10-packet P-frame
    assert len(packetizer.packetize(typical, False)) == 10
    best_file = best_typical = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for nals, key in units:
            packetizer.packetize(nals, key)
        best_file = min(best_file, (time.perf_counter() - started) / len(units))
        started = time.perf_counter()
        for _ in range(200):
            packetizer.packetize(typical, False)
        best_typical = min(best_typical, (time.perf_counter() - started) / 200)
    print(f"\npacketize: {best_typical * 1e6:.1f} us per 10-packet frame; ffmpeg file "
          f"{best_file * 1e6:.1f} us per frame ({packets / len(units):.1f} packets per frame)")
    assert packets > len(units)


def test_avc_config_and_nal_helpers_refuse_bad_input() -> None:
    sps = b"\x67\x64\x00\x1f\xac"
    pps = b"\x68\xee"
    record = bytes((1, 0x64, 0x00, 0x1F, 0xFF, 0xE1)) + len(sps).to_bytes(2, "big") + sps + \
        b"\x01" + len(pps).to_bytes(2, "big") + pps
    config = AvcConfig.parse(record)
    assert (config.profile_level_id, config.sps, config.pps) == ("64001f", (sps,), (pps,))
    for bad in (b"", b"\x01\x64", b"\x02" + record[1:], record[:-1], record[:-4],
                record.replace(b"\xe1", b"\xe0"), record[:5] + b"\xe1\x00\x05\x68" + record[9:]):
        with pytest.raises(MalformedMedia):
            AvcConfig.parse(bad)
    assert split_avcc(b"\x00\x00\x00\x02\x41\x01\x00\x00\x00\x00", 4) == [b"\x41\x01"]
    assert split_avcc(b"\x02\x41\x01\x01\x09", 1) == [b"\x41\x01", b"\x09"]
    for data, size in ((b"\x00\x00\x00\x05\x41", 4), (b"\x00\x00", 4), (b"\x41", 5)):
        with pytest.raises(MalformedMedia):
            split_avcc(data, size)
    # slice_type reads exp-Golomb codes through emulation prevention bytes
    assert slice_type(b"\x65\x88") == "I"  # ue 0, ue 7 (I, all slices)
    assert slice_type(b"\x41\x9a") == "P"  # ue 0, ue 5 (P, all slices)
    # first_mb_in_slice 2^23 - 1 then ue 1 (B): the RBSP 00 00 01 00 00 00 80, escaped twice
    assert slice_type(b"\x01\x00\x00\x03\x01\x00\x00\x03\x00\x80") == "B"
    assert slice_type(b"\x67\x64") is None
    with pytest.raises(MalformedMedia):
        slice_type(b"\x41\x00")
    assert not is_disposable([sps, pps])
    assert is_disposable([b"\x06\x05", b"\x01\x9e"]) and not is_disposable([b"\x21\x9e"])


def test_unsupported_codecs_are_named(tmp_path: Path) -> None:
    """Real non-H.264/AAC FLV from ffmpeg (legacy ids) and PyAV's FFmpeg (Enhanced RTMP)."""
    body = ffmpeg(tmp_path / "legacy.flv", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
                  "-f", "lavfi", "-i", "sine=sample_rate=44100", "-t", "0.5",
                  "-c:v", "flv", "-c:a", "libmp3lame", "-f", "flv")
    video = [data for kind, _, data in tags(body) if kind == TAG_VIDEO]
    audio = [data for kind, _, data in tags(body) if kind == TAG_AUDIO]
    with pytest.raises(UnsupportedCodec,
                       match=re.escape("RTMP video is Sorenson H.263; ShopCast needs H.264")
                       ) as caught:
        parse_video_tag(video[0])
    assert caught.value.code == "unsupported_codec"
    with pytest.raises(UnsupportedCodec, match="RTMP audio is MP3; ShopCast needs AAC"):
        parse_audio_tag(audio[0])

    for codec, name in (("libx265", "HEVC"), ("libsvtav1", "AV1")):
        tag = enhanced_rtmp_first_video_tag(codec)
        assert tag[0] & 0x80  # the Enhanced RTMP header form
        message = f"RTMP video is {name}; ShopCast needs H.264"
        with pytest.raises(UnsupportedCodec, match=re.escape(message)):
            parse_video_tag(tag)
    with pytest.raises(UnsupportedCodec, match="HEVC"):
        parse_video_tag(bytes((0x1C, 1, 0, 0, 0)))  # the pre-standard codec id 12
    with pytest.raises(UnsupportedCodec, match="Opus"):
        parse_audio_tag(b"\x91Opus\x00\x00")


def test_enhanced_rtmp_h264_and_aac_read_like_the_legacy_form(media: dict[str, Stream]) -> None:
    stream = media["bf2"]
    record = next(body[5:] for kind, _, body in tags(stream.path.read_bytes())
                  if kind == TAG_VIDEO)
    head = parse_video_tag(bytes((0x90,)) + b"avc1" + record)  # key frame, sequence start
    assert head is not None and AvcConfig.parse(head.data) == stream.config
    _, tag = next((ts, t) for ts, t in stream.video if t.composition_time_ms)
    cto = tag.composition_time_ms.to_bytes(3, "big", signed=True)
    flags = 0x80 | tag.frame_type << 4
    assert parse_video_tag(bytes((flags | 1,)) + b"avc1" + cto + tag.data) == tag
    assert parse_video_tag(bytes((flags | 3,)) + b"avc1" + tag.data) == VideoTag(
        tag.frame_type, CODEC_AVC, AVC_NALU, 0, tag.data)  # CodedFramesX: no offset
    end = parse_video_tag(b"\x92avc1")
    assert end is not None and end.avc_packet_type == AVC_END_OF_SEQUENCE
    assert parse_video_tag(b"\x94avc1\x02\x00\x0acolorInfo") is None  # metadata
    assert parse_video_tag(b"\xd0avc1\x00") is None  # command frame
    assert parse_video_tag(b"\x57\x00") is None  # legacy video info frame
    assert parse_video_tag(b"") is None
    with pytest.raises(UnsupportedCodec, match="packet type 6"):
        parse_video_tag(b"\x96avc1\x00")  # multitrack
    with pytest.raises(MalformedMedia):
        parse_video_tag(b"\x07\x01\x00\x00\x00")  # frame type 0
    with pytest.raises(MalformedMedia):
        parse_video_tag(b"\x17\x03\x00\x00\x00")  # AVC packet type 3
    asc = b"\x12\x10"
    assert parse_audio_tag(b"\x90mp4a" + asc) == parse_audio_tag(b"\xaf\x00" + asc)
    assert parse_audio_tag(b"\x91mp4a\x21\x00") == parse_audio_tag(b"\xaf\x01\x21\x00")
    assert parse_audio_tag(b"\x92mp4a") is None  # sequence end
    with pytest.raises(MalformedMedia):
        parse_audio_tag(b"\xaf\x02\x00")


def enhanced_rtmp_first_video_tag(codec: str) -> bytes:
    import io

    import numpy as np

    sink = io.BytesIO()
    with av.open(sink, "w", format="flv") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=none"}
        picture = av.VideoFrame.from_ndarray(np.full((128, 160, 3), 90, np.uint8), format="rgb24")
        picture.pts = 0
        for packet in [*stream.encode(picture), *stream.encode(None)]:
            out.mux(packet)
    return next(data for kind, _, data in tags(sink.getvalue()) if kind == TAG_VIDEO)


def test_truncated_and_garbage_tags_raise_only_domain_errors(media: dict[str, Stream]) -> None:
    raw = media["bf2"].path.read_bytes()
    samples: list[tuple[int, bytes]] = []
    seen: set[tuple[int, int]] = set()
    for kind, _, body in tags(raw):
        if kind in (TAG_AUDIO, TAG_VIDEO) and (kind, body[:2]) not in seen:
            seen.add((kind, body[:2]))  # a sequence header, keyframe, inter frame, raw AAC...
            samples.append((kind, body))
    assert len(samples) >= 5
    rng = random.Random(1935)
    checked = 0
    for kind, body in samples:
        cuts = sorted({*range(min(len(body), 80)), *rng.sample(range(len(body)), min(40,
                                                                                 len(body)))})
        for cut in cuts:
            for data in (body[:cut], bytes(b ^ 0x5A for b in body[:cut]) if cut else b""):
                try_everything(kind, data)
                checked += 1
    for _ in range(3000):
        size = rng.randrange(0, 64)
        try_everything(rng.choice((TAG_AUDIO, TAG_VIDEO)), rng.randbytes(size))
        checked += 1
    assert checked > 1000


def try_everything(kind: int, body: bytes) -> None:
    """Parse a tag and everything in it; only MediaError subclasses may come out."""
    try:
        if kind == TAG_AUDIO:
            parse_audio_tag(body)
            return
        tag = parse_video_tag(body)
        if tag is None:
            return
        if tag.avc_packet_type == AVC_SEQUENCE_HEADER:
            config = AvcConfig.parse(tag.data)
            for sps in config.sps:
                sps_dimensions(sps)
            return
        for nal in split_avcc(tag.data, 4):
            slice_type(nal)
        H264Packetizer(MTU).packetize(split_avcc(tag.data, 4), tag.keyframe)
    except (MalformedMedia, UnsupportedCodec) as exc:
        assert isinstance(exc, MediaError) and exc.code in ("malformed_media",
                                                            "unsupported_codec")
