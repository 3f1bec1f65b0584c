"""To H.264, once per room: VP8 from anchors whose browser would not send H.264 (for FLV), and
H.264 with B-frames from RTMP encoders (for WebRTC viewers, ``sfu/rtmp/video.py``).

Runs on the room's codec thread. libx264 Constrained Baseline, ``tune=zerolatency`` (no
lookahead, no B-frames: one frame in, one frame out) and ``ultrafast``, so the added latency
is one encode (a few ms at 640x360). The encoder is rebuilt when the picture size changes, and
forced to a keyframe when the room asks (an FLV joiner, or the FLV keyframe interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

from sfu.flv.depacketizer import NAL_IDR, NAL_PPS, NAL_SPS, split_annexb

_MS = Fraction(1, 1000)


@dataclass(frozen=True)
class SourceFrame:
    """One encoded frame to transcode (a VP8 frame, or an Annex-B H.264 access unit)."""

    data: bytes
    timestamp_ms: int
    force_keyframe: bool


@dataclass(frozen=True)
class H264Frame:
    """Annex-B access unit produced by the transcoder."""

    data: bytes
    timestamp_ms: int
    keyframe: bool
    sps: bytes
    pps: bytes
    width: int
    height: int


class H264Encoder:
    """libx264 for FLV (Constrained Baseline, ``ultrafast``, ``zerolatency``: one frame in, one
    frame out), reopened when the picture size changes; shared by the VP8 transcoder and the
    co-host mixer. Call from one thread only."""

    def __init__(self, bitrate: int = 1_200_000, keyframe_interval_s: float = 2.0) -> None:
        self._encoder: av.VideoCodecContext | None = None
        self._bitrate = bitrate
        self._gop_s = keyframe_interval_s
        self._size = (0, 0)
        self._sps = b""
        self._pps = b""

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width = width
        encoder.height = height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = _MS
        encoder.bit_rate = self._bitrate
        keyint = max(1, round(30 * self._gop_s)) if self._gop_s > 0 else 250
        encoder.options = {
            "profile": "baseline",
            "preset": "ultrafast",
            "tune": "zerolatency",
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:repeat-headers=1",
        }
        encoder.open()
        self._size = (width, height)
        return encoder

    def encode(self, picture: av.VideoFrame, timestamp_ms: int, force_keyframe: bool
               ) -> list[H264Frame]:
        if self._encoder is None or (picture.width, picture.height) != self._size:
            self._encoder = self._open(picture.width, picture.height)
            force_keyframe = True
        picture.pts = timestamp_ms
        picture.time_base = _MS
        picture.pict_type = av.video.frame.PictureType.I if force_keyframe else \
            av.video.frame.PictureType.NONE
        return [self._wrap(bytes(p), timestamp_ms) for p in self._encoder.encode(picture)]

    def _wrap(self, data: bytes, timestamp_ms: int) -> H264Frame:
        keyframe = False
        for nal in split_annexb(data):
            kind = nal[0] & 0x1F
            if kind == NAL_SPS:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal
            elif kind == NAL_IDR:
                keyframe = True
        width, height = self._size
        return H264Frame(data, timestamp_ms, keyframe, self._sps, self._pps, width, height)


class ToH264:
    """Stateful decoder (VP8, or H.264 with B-frames) + H.264 encoder; call ``process`` from
    one thread only. Output frames carry the decoder's presentation times, so a source that
    reorders (B-frames) comes out in presentation order."""

    def __init__(self, source: str = "vp8", bitrate: int = 1_200_000,
                 keyframe_interval_s: float = 2.0) -> None:
        decoder = av.CodecContext.create(source, "r")
        assert isinstance(decoder, av.VideoCodecContext)
        self._decoder = decoder
        self._encoder = H264Encoder(bitrate, keyframe_interval_s)

    def process(self, frame: SourceFrame) -> list[H264Frame]:
        packet = av.Packet(frame.data)
        packet.pts = frame.timestamp_ms
        packet.time_base = _MS
        try:
            pictures = self._decoder.decode(packet)
        except av.FFmpegError:
            return []
        out: list[H264Frame] = []
        for picture in pictures:
            assert isinstance(picture, av.VideoFrame)
            pts = frame.timestamp_ms if picture.pts is None else int(picture.pts)
            out += self._encoder.encode(picture, pts, frame.force_keyframe)
        return out
