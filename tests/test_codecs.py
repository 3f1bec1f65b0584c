"""Codec choice and keyframe detection on real payload layouts (RFC 6184, RFC 7741)."""

from __future__ import annotations

import struct

from sfu.codecs import (
    is_h264_keyframe_start,
    is_vp8_keyframe_start,
    keyframe_detector,
    publisher_preferences,
    viewer_preferences,
)

SPS = bytes([0x67, 0x42, 0xE0, 0x1F])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84])
SLICE = bytes([0x41, 0x9A, 0x02])


def stap_a(*nals: bytes) -> bytes:
    return bytes([0x78]) + b"".join(struct.pack("!H", len(n)) + n for n in nals)


def fu_a(nal_type: int, start: bool) -> bytes:
    return bytes([0x7C, (0x80 if start else 0) | nal_type, 0xAA])


def test_h264_single_nal_units() -> None:
    assert is_h264_keyframe_start(SPS)
    assert is_h264_keyframe_start(IDR)
    assert not is_h264_keyframe_start(PPS)
    assert not is_h264_keyframe_start(SLICE)
    assert not is_h264_keyframe_start(b"")


def test_h264_stap_a_with_sps_is_a_keyframe_start() -> None:
    assert is_h264_keyframe_start(stap_a(SPS, PPS))
    assert not is_h264_keyframe_start(stap_a(PPS, SLICE))


def test_h264_fu_a_only_the_first_fragment_of_an_idr() -> None:
    assert is_h264_keyframe_start(fu_a(5, start=True))
    assert not is_h264_keyframe_start(fu_a(5, start=False))
    assert not is_h264_keyframe_start(fu_a(1, start=True))


def test_vp8_keyframe_bits() -> None:
    # S=1, PID=0, no extension; VP8 header P bit (0x01) clear = key frame
    assert is_vp8_keyframe_start(bytes([0x10, 0x00]))
    assert not is_vp8_keyframe_start(bytes([0x10, 0x01]))  # inter frame
    assert not is_vp8_keyframe_start(bytes([0x00, 0x00]))  # not a partition start
    # X=1 with I (2-byte picture id), L and T present
    assert is_vp8_keyframe_start(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x00]))
    assert not is_vp8_keyframe_start(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x01]))


def test_audio_packets_are_always_a_valid_start() -> None:
    assert keyframe_detector("opus")(b"\x01\x02")


def test_publisher_gets_one_video_codec_constrained_baseline_first() -> None:
    offered = [
        ("VP8", {}),
        ("H264", {"packetization-mode": "1", "profile-level-id": "42001f"}),
        ("H264", {"packetization-mode": "1", "profile-level-id": "42e01f"}),
        ("rtx", {"apt": 96}),
    ]
    prefs = publisher_preferences("video", offered)
    names = [p.mimeType for p in prefs]
    assert names == ["video/H264", "video/rtx"]
    assert prefs[0].parameters["profile-level-id"] == "42e01f"


def test_publisher_h264_without_packetization_mode_1_falls_back_to_vp8() -> None:
    offered = [("H264", {"packetization-mode": "0", "profile-level-id": "42e01f"}), ("VP8", {})]
    assert publisher_preferences("video", offered)[0].mimeType == "video/VP8"


def test_publisher_with_no_usable_codec_gets_nothing() -> None:
    assert publisher_preferences("video", [("AV1", {}), ("VP9", {})]) == []
    assert [p.mimeType for p in publisher_preferences("audio", [("opus", {})])] == ["audio/opus"]


def test_viewer_is_offered_exactly_the_publisher_codec() -> None:
    chosen = publisher_preferences("video", [("VP8", {})])[0]
    prefs = viewer_preferences(chosen)  # type: ignore[arg-type]
    assert len(prefs) == 1 and prefs[0].mimeType == "video/VP8"
