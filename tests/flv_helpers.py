"""Synthetic publisher media for FLV unit tests: real encoders, aiortc's packetizers, real
Producers, and a fake transport that records what a reader writes."""

from __future__ import annotations

import fractions
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from loadtest.media import Painter
from sfu.producer import Producer

FPS = 30
VIDEO_CLOCK = 90_000


def h264_frames(count: int, gop: int = 30, size: tuple[int, int] = (640, 360),
                start: int = 0) -> list[tuple[bytes, bool]]:
    """(Annex-B access unit, keyframe) pairs from libx264 Constrained Baseline."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height = size
    enc.pix_fmt = "yuv420p"
    enc.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    enc.options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency",
                   "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:repeat-headers=1"}
    painter = Painter("blue", texture=False)
    out = []
    for i in range(start, start + count):
        frame = painter.paint(i, 1000 + i).reformat(width=size[0], height=size[1])
        frame.pts = i * VIDEO_CLOCK // FPS
        for packet in enc.encode(frame):
            out.append((bytes(packet), packet.is_keyframe))
    return out


def vp8_frames(count: int) -> list[tuple[bytes, bool]]:
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height = 640, 360
    enc.pix_fmt = "yuv420p"
    enc.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    enc.gop_size = 30
    painter = Painter("red", texture=False)
    out = []
    for i in range(count):
        frame = painter.paint(i, 1000 + i)
        frame.pts = i * VIDEO_CLOCK // FPS
        for packet in enc.encode(frame):
            out.append((bytes(packet), packet.is_keyframe))
    return out


def opus_packets(count: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "stereo"
    enc.format = "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    out = []
    for i in range(count):
        t = (np.arange(960) + i * 960) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]).T.reshape(1, -1).copy(),
                                           format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * 960
        out.extend(bytes(p) for p in enc.encode(frame))
    return out


def codec(kind: str) -> RTCRtpCodecParameters:
    if kind == "opus":
        return RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                     payloadType=111)
    if kind == "vp8":
        return RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    return RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102,
                                 parameters={"packetization-mode": "1",
                                             "profile-level-id": "42e01f"})


@dataclass
class Feeder:
    """A real Producer fed with RTP packets as aiortc's receiver would hand them over."""

    producer: Producer
    ssrc: int = 1234
    seq: int = 1000
    keyframe_requests: list[float] = field(default_factory=list)

    @classmethod
    def make(cls, kind: str, name: str) -> Feeder:
        requests: list[float] = []
        producer = Producer(kind, codec(name), publisher_id="pub1",
                            request_keyframe=lambda ssrc: requests.append(0.0),
                            keyframe_throttle_s=0.0)
        return cls(producer, keyframe_requests=requests)

    def send(self, payloads: list[bytes], timestamp: int, drop: set[int] | None = None) -> None:
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=self.producer.payload_type,
                               marker=int(i == len(payloads) - 1),
                               sequence_number=self.seq & 0xFFFF, timestamp=timestamp & 0xFFFFFFFF,
                               ssrc=self.ssrc, payload=payload)
            self.seq += 1
            if drop and i in drop:
                continue
            self.producer.ingest(packet)


def h264_payloads(access_unit: bytes) -> list[bytes]:
    return H264Encoder._packetize(H264Encoder._split_bitstream(access_unit))


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    return Vp8Encoder._packetize(frame, picture_id)


class FakeTransport:
    """Records writes; ``buffered`` simulates a socket that does not drain."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.chunks.append(b"".join(data))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return self.closing or self.aborted

    def abort(self) -> None:
        self.aborted = True

    def body(self) -> bytes:
        """The de-chunked HTTP body."""
        out = bytearray()
        for chunk in self.chunks:
            head, _, rest = chunk.partition(b"\r\n")
            size = int(head, 16)
            out += rest[:size]
        return bytes(out)


def ffprobe(path_or_url: str) -> dict[str, Any]:
    import json

    result = subprocess.run(
        ["ffprobe", "-v", "error", "-probesize", "32768", "-analyzeduration", "500000",
         "-show_streams", "-of", "json", path_or_url],
        capture_output=True, text=True, timeout=30, check=True,
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def tags(body: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(type, timestamp ms, data) of each tag in an FLV byte stream."""
    pos = 13
    while pos + 11 <= len(body):
        size = int.from_bytes(body[pos + 1:pos + 4], "big")
        ts = int.from_bytes(body[pos + 4:pos + 7], "big") | (body[pos + 7] << 24)
        yield body[pos], ts, body[pos + 11:pos + 11 + size]
        pos += 11 + size + 4


async def start_anchor(server: Any, room: str) -> Any:
    """A painted aiortc anchor, live once the room's FLV output has its first keyframe."""
    from waiting import wait_for

    from loadtest.clients import publish
    from loadtest.media import PaintedVideoTrack, ToneAudioTrack
    from sfu.flv.manager import FLV_KEY

    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    outputs = server.app[FLV_KEY].outputs
    await wait_for(lambda: room in outputs and outputs[room].live, 10, "FLV output live")
    return anchor
