"""The FLV output of a room whose anchor sends FLV tags itself (RTMP): a remux of its tags.

The encoder's H.264 tags (composition offsets and B-frames included) and AAC tags go into the
room's tag log as they came, retimed to the room's timeline; its sequence headers make the
joiners' header. A new video sequence header (the encoder changed resolution, or came back
after a drop) is glued before the next keyframe, as the RTP path does for new SPS/PPS.

While co-hosts are on stage the output's mixer replaces the anchor's video (the anchor's
frames are handed to it as Annex-B), exactly as for a WHIP anchor (``RoomFlvOutput``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sfu.errors import MediaError
from sfu.flv.depacketizer import START_CODE
from sfu.flv.gop_cache import Entry
from sfu.flv.muxer import file_header
from sfu.flv.tag_feed import TAG_AUDIO, TAG_VIDEO, FeedTag, FlvFeed
from sfu.rtmp.avc import AvcConfig, split_avcc

if TYPE_CHECKING:
    from sfu.flv.output import RoomFlvOutput


def flv_tag(kind: int, timestamp_ms: int, body: bytes) -> bytes:
    """A whole FLV tag: 11-byte header, body, PreviousTagSize."""
    size = len(body)
    header = bytes((
        kind, (size >> 16) & 0xFF, (size >> 8) & 0xFF, size & 0xFF,
        (timestamp_ms >> 16) & 0xFF, (timestamp_ms >> 8) & 0xFF, timestamp_ms & 0xFF,
        (timestamp_ms >> 24) & 0xFF, 0, 0, 0,
    ))
    return header + body + (11 + size).to_bytes(4, "big")


class DirectTags:
    """Feeds ``output`` from an ``FlvFeed``; one per output, detached when it closes."""

    def __init__(self, output: RoomFlvOutput, feed: FlvFeed) -> None:
        self.output = output
        self.feed = feed
        self._video_header: bytes | None = None  # the body of the header readers have
        self._glue = b""  # a new sequence header waiting for its keyframe
        self._audio_glue = False  # the anchor's AAC config goes before its next audio tag
        self._started = False  # the first keyframe went out
        self._length_size = 4
        self._sps = b""
        self._pps = b""
        if feed.video_header is not None:
            self._on_video_header(feed.video_header, announce=False)
        feed.add(self.on_tag)

    @property
    def has_audio(self) -> bool:
        return self.feed.has_audio

    def header(self, mixed_video: bytes | None = None, mixed_audio: bytes | None = None
               ) -> bytes:
        """FLV file header + the sequence headers a joiner needs first (the mix's
        sequence-header tags instead of the anchor's while a co-host mix is on air)."""
        parts = [file_header(audio=self.feed.has_audio, video=self._video_header is not None)]
        if mixed_video is not None:
            parts.append(mixed_video)
        elif self._video_header is not None:
            parts.append(flv_tag(TAG_VIDEO, 0, self._video_header))
        if mixed_audio is not None:
            parts.append(mixed_audio)
        elif self.feed.audio_header is not None:
            parts.append(flv_tag(TAG_AUDIO, 0, self.feed.audio_header.body))
        return b"".join(parts)

    def on_tag(self, tag: FeedTag) -> None:
        output = self.output
        if output.closed:
            return
        if tag.kind == TAG_VIDEO:
            if tag.sequence_header:
                self._on_video_header(tag)
            else:
                self._on_video(tag)
        elif tag.sequence_header:
            if self._started:  # a new AAC config mid-stream goes in line, as it came
                output.log.append(Entry(flv_tag(TAG_AUDIO, tag.timestamp_ms, tag.body),
                                        tag.timestamp_ms, False))
            output.publish_header()
        elif self._started and not output.mixed_audio:
            data = flv_tag(TAG_AUDIO, tag.timestamp_ms, tag.body)
            header = self.feed.audio_header
            if self._audio_glue and header is not None:  # back from the mix's AAC
                data = flv_tag(TAG_AUDIO, tag.timestamp_ms, header.body) + data
                self._audio_glue = False
            output.log.append(Entry(data, tag.timestamp_ms, False))

    def _on_video_header(self, tag: FeedTag, announce: bool = True) -> None:
        body = tag.body
        try:
            config = AvcConfig.parse(body[5:])
            self._length_size = config.nal_length_size
            self._sps, self._pps = config.sps[0], config.pps[0]
        except MediaError:
            pass  # the mixer then waits for in-band parameter sets
        if self._video_header is None or not self._started:
            self._video_header = body
            if announce:
                self.output.publish_header()
        elif body != self._video_header:
            self._video_header = body
            self._glue = body

    def _on_video(self, tag: FeedTag) -> None:
        output = self.output
        if not self._started and not tag.keyframe:
            return
        if output.mixing_input_wanted():
            annexb = b"".join(START_CODE + nal
                              for nal in split_avcc(tag.body[5:], self._length_size))
            output.mix_video(0, annexb, tag.timestamp_ms, tag.keyframe, self._sps, self._pps)
        data = flv_tag(TAG_VIDEO, tag.timestamp_ms, tag.body)
        if tag.keyframe and self._glue:
            data = flv_tag(TAG_VIDEO, tag.timestamp_ms, self._glue) + data
            self._glue = b""
            output.publish_header()
        output.direct_video(data, tag.timestamp_ms, tag.keyframe)
        self._started = True

    def audio_source_changed(self) -> None:
        """The mix's AAC went off air: the anchor's own resumes, its config first."""
        self._audio_glue = True

    def sequence_header_tag(self, timestamp_ms: int) -> bytes:
        """The anchor's video sequence header, to glue before a keyframe (after a mix)."""
        if self._video_header is None:
            return b""
        return flv_tag(TAG_VIDEO, timestamp_ms, self._video_header)

    def close(self) -> None:
        self.feed.remove(self.on_tag)

