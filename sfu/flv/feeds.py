"""What feeds a room's FLV output besides its anchor's packets: a producer sink, and a co-host
whose video frames and Opus go to the output's mix (on the codec threads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import av

from sfu.flv.depacketizer import H264Depacketizer, Vp8Depacketizer, parse_rtp
from sfu.producer import Producer

if TYPE_CHECKING:
    from sfu.flv.output import RoomFlvOutput


class ProducerSink:
    """A producer sink that hands packets to the output (``PacketSink``)."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def close(self) -> None:
        pass


class CohostFeed:
    """One co-host's tracks feeding the room's mix: video frames to the mixer, audio packets
    to the Opus->AAC mixer, on the codec threads."""

    def __init__(self, output: RoomFlvOutput, slot: int, producers: list[Producer]) -> None:
        self.slot = slot
        self.output = output
        self._sinks: list[tuple[Producer, ProducerSink]] = []
        for producer in producers:
            if producer.kind == "video":
                name = producer.codec.name.lower()
                on_loss = producer.request_keyframe
                self._depacketizer: H264Depacketizer | Vp8Depacketizer = (
                    Vp8Depacketizer(on_loss) if name == "vp8" else H264Depacketizer(on_loss))
                self._add(producer, self._on_video)
            elif producer.kind == "audio":
                self._add(producer, self._on_audio)

    def _add(self, producer: Producer, forward: Any) -> None:
        sink = ProducerSink(forward)
        self._sinks.append((producer, sink))
        producer.attach(sink)  # a new video sink asks its publisher for a keyframe

    def _on_video(self, packet: bytes, keyframe: bool) -> None:
        for frame in self._depacketizer.push(packet):
            self.output.mix_video(self.slot, frame.data, 0, frame.keyframe, frame.sps, frame.pps)

    def _on_audio(self, packet: bytes, keyframe: bool) -> None:
        rtp = parse_rtp(packet)
        if rtp is not None:
            self.output.mix_audio(self.slot, rtp.payload)

    def detach(self) -> None:
        for producer, sink in self._sinks:
            producer.detach(sink)
        self._sinks = []


def picture_size(access_unit: bytes) -> tuple[int, int]:
    """Width and height of a keyframe, by decoding it (once per new SPS, ~1 ms)."""
    decoder = av.CodecContext.create("h264", "r")
    for frame in decoder.decode(av.Packet(access_unit)):
        assert isinstance(frame, av.VideoFrame)
        return frame.width, frame.height
    return 0, 0
