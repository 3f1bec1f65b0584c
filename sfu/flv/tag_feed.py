"""An RTMP anchor's FLV tags, handed as they came to the room's FLV output: a remux.

RTMP media messages are FLV tag bodies already, so HTTP-FLV readers of an RTMP room get the
encoder's own H.264 (B-frames and composition offsets included) and its own AAC: no
depacketizing, no transcoding. The feed keeps the current sequence headers so that an output
made later (or a reader joining) starts with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

TAG_AUDIO = 8
TAG_VIDEO = 9


@dataclass(frozen=True)
class FeedTag:
    """One tag body on the room's timeline (ms since the anchor's first tag)."""

    kind: int  # TAG_AUDIO or TAG_VIDEO
    timestamp_ms: int  # decode time (FLV tag time); the body keeps its composition offset
    body: bytes
    keyframe: bool
    sequence_header: bool


FeedListener = Callable[[FeedTag], None]
OpusListener = Callable[[bytes, int], None]
"""(Opus payload, ms on the room timeline): the anchor's audio as WebRTC viewers get it, for
the co-host mix, whose AAC sums every publisher's Opus."""


class FlvFeed:
    """The anchor's tags and sequence headers; listeners are the room's FLV output."""

    def __init__(self) -> None:
        self.video_header: FeedTag | None = None
        self.audio_header: FeedTag | None = None
        self.has_audio = False
        self._listeners: list[FeedListener] = []
        self._opus_listeners: list[OpusListener] = []

    def add(self, listener: FeedListener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: FeedListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def push(self, tag: FeedTag) -> None:
        if tag.sequence_header:
            if tag.kind == TAG_VIDEO:
                self.video_header = tag
            else:
                self.audio_header = tag
                self.has_audio = True
        for listener in self._listeners:
            listener(tag)

    def add_opus(self, listener: OpusListener) -> None:
        self._opus_listeners.append(listener)

    def remove_opus(self, listener: OpusListener) -> None:
        if listener in self._opus_listeners:
            self._opus_listeners.remove(listener)

    def push_opus(self, payload: bytes, timestamp_ms: int) -> None:
        for listener in self._opus_listeners:
            listener(payload, timestamp_ms)
