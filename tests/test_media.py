"""The load-test media must survive a real H.264 encode at the bitrate the probe publishes at."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from loadtest.media import (
    AUDIO_RATE,
    AUDIO_SAMPLES,
    HEIGHT,
    WIDTH,
    PaintedVideoTrack,
    Painter,
    ToneAudioTrack,
    decode_bits,
    dominant_colour,
    encode_bits,
    latency_ms,
    pin_video_bitrate,
    read_painted,
)

BITRATE = 600_000


def _h264_roundtrip(frames: list[av.VideoFrame]) -> tuple[list[av.VideoFrame], int]:
    """Encode like aiortc's sender (libx264 Baseline, zerolatency, 600 kbps), then decode.

    Returns the decoded frames and the encoded size in bytes.
    """
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height = WIDTH, HEIGHT
    enc.pix_fmt = "yuv420p"
    enc.bit_rate = BITRATE
    enc.framerate = fractions.Fraction(30, 1)
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"level": "31", "tune": "zerolatency"}
    enc.profile = "Baseline"
    dec = av.CodecContext.create("h264", "r")
    out: list[av.VideoFrame] = []
    size = 0
    for i, frame in enumerate([*frames, None]):
        if frame is not None:
            frame.pts = i
            frame.time_base = enc.time_base
        for packet in enc.encode(frame):
            size += packet.size
            out.extend(dec.decode(packet))
    out.extend(dec.decode(None))
    return out, size


def test_bits_roundtrip_and_checksum() -> None:
    bits = encode_bits(123_456_789_012, 4242)
    assert decode_bits(bits) == (123_456_789_012, 4242)
    bits[10] ^= 1
    assert decode_bits(bits) is None


def test_painted_frames_survive_h264_at_600kbps() -> None:
    painter = Painter()
    base_ms = 1_700_000_000_000 % (1 << 40)
    sent = [(base_ms + 33 * i + (i * 7919) % 13, i) for i in range(90)]
    decoded, size = _h264_roundtrip([painter.paint(no, ms) for ms, no in sent])
    assert len(decoded) == len(sent)
    # The texture makes the encoder spend its budget: a realistic packet rate for load tests.
    kbps = size * 8 / (len(sent) / 30) / 1000
    assert 400 < kbps < 800, kbps
    read = [read_painted(frame) for frame in decoded]
    # Every frame, including the first (keyframe) and the hue changes, reads back exactly.
    assert read == sent


def test_unpainted_frame_reads_none() -> None:
    grey = av.VideoFrame.from_ndarray(
        np.full((HEIGHT * 3 // 2, WIDTH), 128, dtype=np.uint8), format="yuv420p"
    )
    assert read_painted(grey) is None
    noise = np.random.default_rng(1).integers(0, 256, (HEIGHT * 3 // 2, WIDTH), dtype=np.uint8)
    assert read_painted(av.VideoFrame.from_ndarray(noise, format="yuv420p")) is None


def test_read_painted_after_rescale() -> None:
    frame = Painter().paint(77, 5_000)
    assert read_painted(frame.reformat(width=320, height=180)) == (5_000, 77)
    assert read_painted(frame.reformat(width=1280, height=720, format="nv12")) == (5_000, 77)


def test_colour_distinguishes_red_and_blue_after_h264() -> None:
    red, blue = Painter("red"), Painter("blue")
    frames = [red.paint(i, 1000 + i) for i in range(10)]
    frames += [blue.paint(i, 2000 + i) for i in range(10)]
    decoded, _ = _h264_roundtrip(frames)
    r = dominant_colour(decoded[9])
    b = dominant_colour(decoded[19])
    assert r[0] > 150 and r[2] < 80, r
    assert b[2] > 150 and b[0] < 80, b


def test_latency_wraps() -> None:
    assert latency_ms((1 << 40) - 5, at_ms=10) == 15
    assert latency_ms(1000, at_ms=1250) == 250


async def test_painted_track_paces_and_counts() -> None:
    track = PaintedVideoTrack(colour="green")
    frames = [await track.recv() for _ in range(4)]
    track.stop()
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000]
    assert [read_painted(f)[1] for f in frames] == [0, 1, 2, 3]  # type: ignore[index]
    assert (frames[0].width, frames[0].height, frames[0].format.name) == (640, 360, "yuv420p")


async def test_tone_track_frames() -> None:
    track = ToneAudioTrack()
    frames = [await track.recv() for _ in range(3)]
    track.stop()
    for i, frame in enumerate(frames):
        assert frame.samples == AUDIO_SAMPLES
        assert frame.sample_rate == AUDIO_RATE
        assert frame.pts == i * AUDIO_SAMPLES
        assert frame.format.name == "s16"
        samples = frame.to_ndarray()
        assert samples.shape == (1, AUDIO_SAMPLES)
        assert 0.15 * 32767 < np.abs(samples).max() <= 0.21 * 32767


async def test_pin_video_bitrate_ignores_remb() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver(PaintedVideoTrack(), direction="sendonly").sender
        encoder = pin_video_bitrate(sender, 600_000, "H264")
        assert sender._RTCRtpSender__encoder is encoder  # type: ignore[attr-defined]
        encoder.target_bitrate = 2_500_000  # what the REMB handler does
        assert encoder.target_bitrate == 600_000 and encoder.last_remb == 2_500_000
        with pytest.raises(ValueError):
            pin_video_bitrate(sender, 600_000, "AV1")
    finally:
        await pc.close()
