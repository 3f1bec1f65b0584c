"""An RTMP anchor's H.264, turned into the room's canonical RTP once (never per viewer).

FLV video tags carry AVCC access units in decode order, each with its decode time (the tag
timestamp) and a composition offset (presentation = decode + offset). WebRTC viewers get them
as RFC 6184 packets (``sfu/rtmp/packetizer.py``) with the presentation time on the 90 kHz
clock, SPS and PPS before every IDR, through an ordinary ``Producer``: from there on an RTMP
anchor's packets travel exactly like a WHIP anchor's.

B-frames. A WebRTC receiver assumes that frames arrive in presentation order: libwebrtc drops a
frame whose timestamp is older than one it already decoded, and the H.264 decoder behind it
expects one picture out per picture in. A stream with B-frames (any non-zero composition
offset) therefore goes through ``BFrameRemover`` for WebRTC viewers: decoded and re-encoded
once per room without B-frames (libx264 ``zerolatency``), which also makes keyframe requests
from viewers work. FLV readers keep the anchor's own stream, B-frames included (a remux). The
anchor is told, in the log, in ``/metrics`` and with a room event, to set ``bframes=0``, which
spares the transcode.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters
from aiortc.rtcrtpparameters import RTCRtcpFeedback
from aiortc.rtp import RtpPacket

from sfu.flv.depacketizer import START_CODE, split_annexb
from sfu.flv.transcode import H264Frame, SourceFrame, ToH264
from sfu.flv.worker import OrderedWorker
from sfu.producer import Producer
from sfu.rtmp.avc import AvcConfig, nal_type, split_avcc
from sfu.rtmp.packetizer import H264Packetizer

logger = logging.getLogger("shopcast.sfu.rtmp")

VIDEO_PAYLOAD_TYPE = 102
CLOCK_KHZ = 90
NAL_IDR = 5


def h264_codec(profile_level_id: str) -> RTCRtpCodecParameters:
    """The codec an RTMP anchor's video is announced with to viewers: its own profile."""
    return RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=VIDEO_PAYLOAD_TYPE,
        rtcpFeedback=[
            RTCRtcpFeedback(type="nack"),
            RTCRtcpFeedback(type="nack", parameter="pli"),
            RTCRtcpFeedback(type="goog-remb"),
        ],
        parameters={
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": profile_level_id,
        },
    )


@dataclass(frozen=True)
class AccessUnit:
    """One decoded-order picture: its NAL units, presentation time (ms) and whether an IDR."""

    nals: list[bytes]
    pts_ms: int
    keyframe: bool


class BFrameRemover:
    """Decode + re-encode without B-frames, on the room's codec thread (see module doc)."""

    def __init__(self, keyframe_interval_s: float) -> None:
        self._transcoder = ToH264("h264", keyframe_interval_s=keyframe_interval_s)
        self.force_keyframe = False
        self.parameter_sets: list[bytes] = []  # SPS and PPS: RTMP sends them out of band

    def process(self, unit: AccessUnit) -> list[H264Frame]:
        nals = [*self.parameter_sets, *unit.nals] if unit.keyframe else unit.nals
        force, self.force_keyframe = self.force_keyframe, False
        return self._transcoder.process(
            SourceFrame(b"".join(START_CODE + nal for nal in nals), unit.pts_ms, force))


class RtmpVideo:
    """Video tags in, canonical RTP out through ``producer`` (made at the first keyframe)."""

    def __init__(self, room: str, *, keyframe_interval_s: float,
                 on_bframes: Callable[[], None]) -> None:
        self.room = room
        self.config: AvcConfig | None = None
        self.producer: Producer | None = None
        self.bframes = False  # the anchor sends B-frames: WebRTC viewers get the transcode
        self.frames = 0
        self.keyframe_requests = 0
        self._packetizer = H264Packetizer()
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._keyframe_interval_s = keyframe_interval_s
        self._on_bframes = on_bframes
        self._remover: BFrameRemover | None = None
        self._worker: OrderedWorker[AccessUnit, H264Frame] | None = None
        self._waiting_keyframe = True  # the transcode starts at the source's next IDR

    @property
    def transcoding(self) -> bool:
        return self._worker is not None

    def set_config(self, config: AvcConfig) -> None:
        self.config = config
        self._packetizer.set_parameter_sets(config.sps, config.pps)
        if self._remover is not None:
            self._remover.parameter_sets = [*config.sps, *config.pps]

    def access_unit(self, avcc: bytes, dts_ms: int, cts_ms: int) -> AccessUnit | None:
        """Split one NALU tag; None before the sequence header (nothing can be decoded)."""
        if self.config is None:
            return None
        nals = split_avcc(avcc, self.config.nal_length_size)
        keyframe = any(nal_type(n) == NAL_IDR for n in nals)
        if cts_ms != 0 and not self.bframes:
            self.bframes = True
            self._on_bframes()
        return AccessUnit(nals, dts_ms + cts_ms, keyframe)

    def make_producer(self, make: Callable[[RTCRtpCodecParameters], Producer]) -> Producer:
        assert self.config is not None
        profile = "42e01f" if self.bframes else self.config.profile_level_id
        self.producer = make(h264_codec(profile))
        if self.bframes:
            self._start_transcode()
        return self.producer

    def push(self, unit: AccessUnit) -> None:
        """One access unit to WebRTC viewers: packetized here, or via the transcode."""
        self.frames += 1
        if self.producer is None:
            return
        if self.bframes and self._worker is None:
            self._start_transcode()
        if self._worker is not None:
            if self._waiting_keyframe and not unit.keyframe:
                return
            self._waiting_keyframe = False
            self._worker.submit(unit)
            return
        self._send(unit.nals, unit.pts_ms, unit.keyframe)

    def request_keyframe(self, _media_ssrc: int = 0) -> None:
        """From viewers (PLI/FIR): an RTMP encoder cannot be asked, our transcode can."""
        self.keyframe_requests += 1
        if self._remover is not None:
            self._remover.force_keyframe = True

    def _start_transcode(self) -> None:
        logger.warning(
            "RTMP room=%s: the encoder sends B-frames; WebRTC viewers get a transcode without "
            "them (set bframes=0 in the encoder to spare it)", self.room)
        self._remover = BFrameRemover(self._keyframe_interval_s)
        if self.config is not None:
            self._remover.parameter_sets = [*self.config.sps, *self.config.pps]
        self._worker = OrderedWorker(f"rtmp-bframes-{self.room}", self._remover.process,
                                     self._on_transcoded)
        self._waiting_keyframe = True

    def _on_transcoded(self, frames: list[H264Frame]) -> None:
        for frame in frames:
            self._send(split_annexb(frame.data), frame.timestamp_ms, frame.keyframe)

    def _send(self, nals: list[bytes], pts_ms: int, keyframe: bool) -> None:
        producer = self.producer
        if producer is None or producer.closed:
            return
        payloads = self._packetizer.packetize(nals, keyframe)
        timestamp = (pts_ms * CLOCK_KHZ) & 0xFFFFFFFF
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            packet = RtpPacket(payload_type=VIDEO_PAYLOAD_TYPE, marker=int(i == last),
                               sequence_number=self._seq, timestamp=timestamp, ssrc=self._ssrc,
                               payload=payload)
            self._seq = (self._seq + 1) & 0xFFFF
            producer.ingest(packet)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    @property
    def codec_busy_s(self) -> float:
        return self._worker.busy_s if self._worker is not None else 0.0
