"""PyAV's FLV muxer, one stream per container, cut into whole tags.

Each track gets its own single-stream FLV container: libavformat's interleaver would hold a
video packet until an audio packet with a later timestamp arrived (and up to 10 s if audio
stops); with one stream per container every ``mux`` writes its tag at once. FLV tags are
self-contained (header, body, trailing PreviousTagSize), so tags of the two containers
concatenate into one valid stream. The joiner's header is the FLV file header (flags for
both tracks) followed by each container's sequence-header tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

FLV_HEADER_SIZE = 13  # 9-byte file header + PreviousTagSize0
TAG_AUDIO = 8
TAG_VIDEO = 9
FLAG_AUDIO = 0x04
FLAG_VIDEO = 0x01
MS = Fraction(1, 1000)
_OPTIONS = {"flvflags": "no_duration_filesize+no_metadata"}
_CONTAINER_OPTIONS = {"flush_packets": "1"}


@dataclass(frozen=True)
class Tag:
    """One FLV tag as written by the muxer, with what the GOP cache and readers need."""

    data: bytes
    kind: int  # TAG_AUDIO or TAG_VIDEO
    timestamp: int  # ms
    keyframe: bool
    sequence_header: bool


def split_tags(data: bytes) -> tuple[bytes, list[Tag]]:
    """(file header or b"", tags) of muxer output; tags are cut by their DataSize fields."""
    header = b""
    pos = 0
    if data[:3] == b"FLV":
        header, pos = data[:FLV_HEADER_SIZE], FLV_HEADER_SIZE
    tags = []
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        end = pos + 11 + size + 4
        if end > len(data):
            raise ValueError("truncated FLV tag")
        kind = data[pos] & 0x1F
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        body0 = data[pos + 11] if size > 0 else 0
        body1 = data[pos + 12] if size > 1 else 0xFF
        keyframe = kind == TAG_VIDEO and body0 >> 4 == 1
        config = body1 == 0 and kind in (TAG_VIDEO, TAG_AUDIO)
        tags.append(Tag(data[pos:end], kind, ts, keyframe, config))
        pos = end
    return header, tags


def retime(tag: Tag, timestamp: int) -> Tag:
    """The same tag at another timestamp (a mid-stream sequence header goes with its frame)."""
    data = bytearray(tag.data)
    data[4:7] = (timestamp & 0xFFFFFF).to_bytes(3, "big")
    data[7] = (timestamp >> 24) & 0xFF
    return Tag(bytes(data), tag.kind, timestamp, tag.keyframe, tag.sequence_header)


def file_header(audio: bool, video: bool) -> bytes:
    """The 13-byte FLV file header announcing the tracks the stream carries."""
    flags = (FLAG_AUDIO if audio else 0) | (FLAG_VIDEO if video else 0)
    return b"FLV\x01" + bytes((flags,)) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


class _Sink:
    """File-like target for PyAV: collects whatever one ``mux`` call writes."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class StreamMuxer:
    """One FLV container with one stream; ``mux`` returns the tags a packet became.

    ``sequence_header`` is the stream's AVC/AAC config tag (timestamp 0), known once the
    first packet (video: a keyframe carrying SPS/PPS) has been muxed.
    """

    def __init__(self, sink: _Sink, container: Any, stream: Any) -> None:
        self._container = container
        self._stream = stream
        self._sink = sink
        self.sequence_header: Tag | None = None
        self._last_ts = -1

    @classmethod
    def video(cls, width: int, height: int) -> StreamMuxer:
        """H.264 in Annex-B; the first packet's SPS/PPS become the sequence header."""
        sink = _Sink()
        container = av.open(
            sink, "w", format="flv", options=_OPTIONS, container_options=_CONTAINER_OPTIONS
        )
        stream = container.add_mux_stream("h264", width=width, height=height)
        return cls(sink, container, stream)

    @classmethod
    def audio(cls, sample_rate: int = 48000, layout: str = "stereo") -> StreamMuxer:
        """AAC-LC; the stream's own (never used) encoder supplies the AudioSpecificConfig."""
        sink = _Sink()
        container = av.open(
            sink, "w", format="flv", options=_OPTIONS, container_options=_CONTAINER_OPTIONS
        )
        stream = container.add_stream("aac", rate=sample_rate, layout=layout)
        muxer = cls(sink, container, stream)
        container.start_encoding()
        muxer._collect()
        return muxer

    def mux(self, data: bytes, timestamp_ms: int, keyframe: bool) -> list[Tag]:
        """Write one frame; timestamps are forced monotonic (the muxer rejects going back)."""
        timestamp = max(timestamp_ms, self._last_ts if self._last_ts >= 0 else 0)
        self._last_ts = timestamp
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.pts = packet.dts = timestamp
        packet.time_base = MS
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        return self._collect()

    def _collect(self) -> list[Tag]:
        data = self._sink.take()
        if not data:
            return []
        _, tags = split_tags(data)
        media = []
        for tag in tags:
            if tag.sequence_header and tag.timestamp == 0 and self.sequence_header is None:
                self.sequence_header = tag
            else:
                media.append(tag)
        return media

    def close(self) -> None:
        try:
            self._container.close()
        except (av.FFmpegError, ValueError):
            pass  # a container that never started has nothing to finish
