"""An RTMP anchor's AAC into Opus for WebRTC viewers, on AAC-in-FLV made by the ffmpeg CLI.

The Opus packets are decoded again with PyAV's opus decoder: the tone must still be 440 Hz,
the length must match what went in, and the RTP timestamps must run 960 apart from 0.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from sfu.errors import MalformedMedia
from sfu.rtmp.aac_to_opus import AacToOpus, OpusPayload
from sfu.rtmp.flv_tags import AAC_SEQUENCE_HEADER, parse_audio_tag

SECONDS = 3
TONE_HZ = 440


def audio_tags(flv: bytes) -> Iterator[tuple[int, bytes]]:
    """(timestamp ms, audio tag body) of each audio tag of an FLV file."""
    pos = int.from_bytes(flv[5:9], "big") + 4
    while pos + 11 <= len(flv):
        size = int.from_bytes(flv[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(flv[pos + 4 : pos + 7], "big") | (flv[pos + 7] << 24)
        if flv[pos] == 8:
            yield timestamp, flv[pos + 11 : pos + 11 + size]
        pos += 11 + size + 4


def aac_flv(path: Path, rate: int, channels: int = 1) -> tuple[bytes, list[tuple[int, bytes]]]:
    """(AudioSpecificConfig, [(timestamp ms, raw AAC)]) of an ffmpeg-made sine in FLV."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency={TONE_HZ}:sample_rate={rate}:duration={SECONDS}",
         "-ac", str(channels), "-c:a", "aac", "-b:a", "128k", "-f", "flv", str(path)],
        check=True, timeout=60,
    )
    config = b""
    frames: list[tuple[int, bytes]] = []
    for timestamp, body in audio_tags(path.read_bytes()):
        tag = parse_audio_tag(body)
        assert tag is not None
        if tag.aac_packet_type == AAC_SEQUENCE_HEADER:
            config = tag.data
        else:
            frames.append((timestamp, tag.data))
    assert config and frames
    return config, frames


def aac_seconds(config: bytes, frames: list[tuple[int, bytes]]) -> float:
    """How much audio the AAC frames carry, by decoding them as they are."""
    decoder = av.CodecContext.create("aac", "r")
    decoder.extradata = config
    samples = rate = 0
    for _, data in frames:
        for frame in decoder.decode(av.Packet(data)):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


def decode_opus(packets: list[OpusPayload]) -> np.ndarray:
    """Interleaved stereo float samples at 48 kHz."""
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate = 48000
    decoder.layout = "stereo"
    parts = []
    for packet in packets:
        for frame in decoder.decode(av.Packet(packet.payload)):
            assert frame.sample_rate == 48000 and frame.samples == 960
            parts.append(frame.to_ndarray().astype(np.float32).reshape(frame.samples, -1)
                         if frame.format.is_packed else
                         frame.to_ndarray().astype(np.float32).T)
    return np.concatenate(parts)


def dominant_hz(samples: np.ndarray) -> float:
    mono = samples.mean(axis=1)[4800:]  # past the codecs' start-up
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    return float(np.fft.rfftfreq(len(mono), 1 / 48000)[int(np.argmax(spectrum))])


@pytest.mark.parametrize(("rate", "channels"), [(44100, 1), (48000, 2)])
def test_aac_becomes_opus_at_the_same_pitch_and_length(tmp_path: Path, rate: int,
                                                       channels: int) -> None:
    config, frames = aac_flv(tmp_path / "tone.flv", rate, channels)
    transcoder = AacToOpus(config)
    packets: list[OpusPayload] = []
    for timestamp, data in frames:
        packets += transcoder.push(timestamp, data)
    assert transcoder.errors == 0
    assert transcoder.origin_ms == frames[0][0]
    assert [p.timestamp for p in packets] == [960 * i for i in range(len(packets))]
    assert all(0 < len(p.payload) < 1000 for p in packets)
    # TOC byte: CELT-only (the low-delay mode), 20 ms, stereo, one frame per packet
    assert {(p.payload[0] >> 3) % 4 for p in packets} == {3}
    assert all(p.payload[0] >> 3 >= 16 and p.payload[0] & 0x07 == 0x04 for p in packets)
    bitrate = sum(len(p.payload) for p in packets) * 8 / (len(packets) * 0.020)
    assert 40_000 < bitrate < 100_000  # about 64 kbit/s

    samples = decode_opus(packets)
    assert samples.shape[1] == 2
    assert abs(dominant_hz(samples) - TONE_HZ) <= 10
    assert float(np.sqrt(np.mean(samples[4800:] ** 2))) > 0.05  # a tone, not silence
    sent = aac_seconds(config, frames)
    got = len(samples) / 48000
    assert abs(got - sent) <= 0.060, (got, sent)
    assert abs(got - SECONDS) <= 0.060 + 2 * 1024 / rate  # AAC priming and padding

    audio_s = len(packets) * 0.020
    print(f"\nAAC {rate} Hz x{channels} -> Opus: {transcoder.cpu_s / audio_s * 1000:.1f} ms CPU "
          f"per s of audio ({transcoder.cpu_s / audio_s:.2%} of a core), "
          f"{len(packets)} packets")
    assert transcoder.cpu_s > 0


def test_the_clock_follows_gaps_and_never_steps_back(tmp_path: Path) -> None:
    config, frames = aac_flv(tmp_path / "tone.flv", 44100)
    transcoder = AacToOpus(config)
    stamps: list[int] = []
    half = len(frames) // 2
    for timestamp, data in frames[:half]:
        stamps += [p.timestamp for p in transcoder.push(1000 + timestamp, data)]
    before = stamps[-1]
    # the encoder skipped 500 ms (a network stall on its side): the clock jumps with it
    for timestamp, data in frames[half:]:
        stamps += [p.timestamp for p in transcoder.push(1500 + timestamp, data)]
    steps = np.diff(stamps)
    assert (steps >= 960).all()
    jump = int(steps.max())
    assert abs(jump - 960 - 500 * 48) <= 30 * 48, jump  # 500 ms, give or take a frame
    assert int((steps != 960).sum()) == 1
    after = stamps[-1]
    # timestamps that go backwards (an encoder restart) keep the clock counting forwards
    for timestamp, data in frames[:10]:
        stamps += [p.timestamp for p in transcoder.push(timestamp, data)]
    assert stamps[-1] > after > before
    assert (np.diff(stamps) == 960).sum() == len(stamps) - 2


def test_bad_packets_are_counted_and_skipped(tmp_path: Path) -> None:
    config, frames = aac_flv(tmp_path / "tone.flv", 48000)
    transcoder = AacToOpus(config)
    good = pushed = 0
    junk = [b"\xff" * 7, b"\x00", bytes(range(256)), frames[5][1][:3], b"\x21" * 600]
    for index, (timestamp, data) in enumerate(frames):
        if index % 10 == 5:
            assert transcoder.push(timestamp, junk[(index // 10) % len(junk)]) == []
            pushed += 1
        good += len(transcoder.push(timestamp, data))
    assert transcoder.errors == pushed >= 10
    assert good >= len(frames) * 1024 // 960 - 3  # the stream goes on after each bad packet
    assert transcoder.push(0, b"") == []


def test_sequence_headers(tmp_path: Path) -> None:
    config44, frames44 = aac_flv(tmp_path / "a.flv", 44100)
    config48, frames48 = aac_flv(tmp_path / "b.flv", 48000, 2)
    for bad in (b"", b"\x12", b"\xff\xff\xff\xff"):
        with pytest.raises(MalformedMedia):
            AacToOpus(bad)
    transcoder = AacToOpus(config44)
    stamps = [p.timestamp for ts, data in frames44[:40] for p in transcoder.push(ts, data)]
    transcoder.set_config(config44)  # encoders repeat the sequence header: nothing changes
    stamps += [p.timestamp for ts, data in frames44[40:60] for p in transcoder.push(ts, data)]
    transcoder.set_config(config48)  # a new one (the encoder restarted at 48 kHz stereo)
    last_ms = frames44[59][0]
    stamps += [p.timestamp for ts, data in frames48[:40]
               for p in transcoder.push(last_ms + 23 + ts, data)]
    assert transcoder.errors == 0
    assert (np.diff(stamps) >= 960).all() and (np.diff(stamps) <= 960 * 2).all()
    assert len(stamps) > 60 * 1024 // 960 + 30
