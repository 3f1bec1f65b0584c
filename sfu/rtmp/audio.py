"""An RTMP anchor's AAC, turned into Opus once per room for WebRTC viewers.

The transcode runs on the room's codec thread (``OrderedWorker``: PyAV releases the GIL in
libavcodec), so the event loop keeps forwarding. FLV readers never see this: they get the
anchor's own AAC tags (``sfu/flv/tag_feed.py``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from sfu.flv.worker import OrderedWorker
from sfu.producer import Producer
from sfu.rtmp.aac_to_opus import AacToOpus

AUDIO_PAYLOAD_TYPE = 111
OPUS_KHZ = 48

OPUS_CODEC = RTCRtpCodecParameters(
    mimeType="audio/opus",
    clockRate=48000,
    channels=2,
    payloadType=AUDIO_PAYLOAD_TYPE,
    parameters={},
)


@dataclass(frozen=True)
class AacJob:
    timestamp_ms: int
    data: bytes


class RtmpAudio:
    """AAC tags in (after the AudioSpecificConfig), Opus RTP out through ``producer``."""

    def __init__(self, room: str, audio_specific_config: bytes,
                 on_opus: Callable[[bytes, int], None] | None = None) -> None:
        self.room = room
        self._on_opus_ms = on_opus  # the FLV co-host mix takes the anchor's Opus too
        self.config = audio_specific_config
        self.producer: Producer | None = None
        self.packets = 0
        self._transcoder = AacToOpus(audio_specific_config)
        self._worker: OrderedWorker[AacJob, tuple[int, bytes]] = OrderedWorker(
            f"rtmp-aac-{room}", self._transcode, self._on_opus)
        self._ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._offset = 0  # 48 kHz ticks between the room's time zero and the first AAC frame
        self._first_ms: int | None = None

    def push(self, timestamp_ms: int, raw_aac: bytes) -> None:
        if self._first_ms is None:
            self._first_ms = timestamp_ms
            self._offset = timestamp_ms * OPUS_KHZ
        self._worker.submit(AacJob(timestamp_ms, raw_aac))

    def _transcode(self, job: AacJob) -> list[tuple[int, bytes]]:
        return [(p.timestamp, p.payload) for p in self._transcoder.push(job.timestamp_ms,
                                                                        job.data)]

    def _on_opus(self, packets: list[tuple[int, bytes]]) -> None:
        producer = self.producer
        if producer is None or producer.closed:
            return
        for timestamp, payload in packets:
            ticks = timestamp + self._offset
            packet = RtpPacket(payload_type=AUDIO_PAYLOAD_TYPE, marker=0,
                               sequence_number=self._seq, timestamp=ticks & 0xFFFFFFFF,
                               ssrc=self._ssrc, payload=payload)
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets += 1
            producer.ingest(packet)
            if self._on_opus_ms is not None and not producer.muted:
                self._on_opus_ms(payload, ticks // OPUS_KHZ)

    @property
    def cpu_s(self) -> float:
        return self._transcoder.cpu_s

    @property
    def codec_busy_s(self) -> float:
        return self._worker.busy_s

    @property
    def errors(self) -> int:
        return self._transcoder.errors

    def close(self) -> None:
        self._worker.close()
