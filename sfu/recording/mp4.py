"""FLV tag bodies to fragmented MP4 with PyAV: a remux, never a decode or an encode.

The room's FLV output already carries what the recording needs (the anchor's H.264 or the
co-host mix, and the room's AAC): an AVC tag body is an AVCC access unit behind 5 bytes
(frame type, packet type, composition offset) and an AAC one raw AAC behind 2, which is what
MP4 samples are. The codec parameters come from the FLV sequence headers through a template
stream (PyAV's demuxer reads a few bytes of FLV), so the MP4's ``avcC`` and
``AudioSpecificConfig`` are the stream's own.

Fragments: one from each video keyframe (``frag_keyframe``) and at least one a second
(``frag_duration``), each written whole as soon as the next one begins, behind an empty
``moov``: a killed process leaves every fragment but the last second. Each fragment's ``tfdt``
keeps the recording's clock. The video sample entry is ``avc3``: when the stream's SPS/PPS
change mid-recording (a co-host mix starts or stops, an encoder changes resolution) the new
ones go in-band before each keyframe, which a decoder follows, so one recording survives the
switch.
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av

from sfu.flv.direct import flv_tag
from sfu.flv.muxer import TAG_AUDIO, TAG_VIDEO, file_header
from sfu.recording.segments import SegmentFiles
from sfu.rtmp.avc import AvcConfig, split_avcc

MS = Fraction(1, 1000)
FRAGMENT_US = 1_000_000  # a fragment at each keyframe and at least one a second


OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": str(FRAGMENT_US),  # a kill loses at most this much
    "max_interleave_delta": "1",  # write each packet at once: a fragment lands whole
    "flush_packets": "1",
}


def _template(video_header: bytes | None, audio_header: bytes | None,
              keyframe: bytes | None) -> Any:
    """A demuxed FLV holding just the sequence headers (and a keyframe, for the picture
    size): its streams carry the codec parameters the MP4 streams copy."""
    parts = [file_header(audio=audio_header is not None, video=video_header is not None)]
    if video_header is not None:
        parts.append(flv_tag(TAG_VIDEO, 0, video_header))
    if audio_header is not None:
        parts.append(flv_tag(TAG_AUDIO, 0, audio_header))
    if keyframe is not None:
        parts.append(flv_tag(TAG_VIDEO, 0, keyframe))
    return av.open(io.BytesIO(b"".join(parts)), "r", format="flv")


def _inband(config: AvcConfig, length_size: int) -> bytes:
    return b"".join(len(nal).to_bytes(length_size, "big") + nal
                    for nal in (*config.sps, *config.pps))


class Mp4Remux:
    """One recording's MP4 container; FLV tag bodies in, fragments out to ``files``."""

    def __init__(self, files: SegmentFiles, video_header: bytes | None,
                 audio_header: bytes | None, keyframe: bytes | None, origin_ms: int) -> None:
        self.files = files
        self.origin_ms = origin_ms
        self.audio_config = audio_header[2:] if audio_header is not None else None
        template = _template(video_header, audio_header, keyframe)
        self._container = av.open(files, "w", format="mp4", options=OPTIONS)
        self._video: Any = None
        self._audio: Any = None
        self._length_size = 4
        self._init_length_size = 4
        self._init_params = b""
        self._params = b""  # SPS/PPS to put before keyframes, once they differ from the init's
        try:
            if video_header is not None and template.streams.video:
                self._video = self._container.add_stream_from_template(template.streams.video[0])
                self._video.codec_tag = "avc3"
                config = AvcConfig.parse(video_header[5:])
                self._length_size = self._init_length_size = config.nal_length_size
                self._init_params = video_header[5:]
            if audio_header is not None and template.streams.audio:
                self._audio = self._container.add_stream_from_template(template.streams.audio[0])
        finally:
            template.close()
        self._last = {TAG_VIDEO: -1, TAG_AUDIO: -1}
        self.end_ms = 0  # media time reached (ms on the recording's clock)

    @property
    def has_video(self) -> bool:
        return self._video is not None

    def cut_at(self, ms: int) -> None:
        """The next segment starts with the fragment that starts at ``ms`` (the first
        track's; its time base is the MP4 track's timescale once the header is out)."""
        stream = self._video if self._video is not None else self._audio
        base = stream.time_base
        ticks = ms * base.denominator // (1000 * base.numerator)
        self.files.cut_at(1, max(ticks - 1, 0))

    def video_config(self, header: bytes) -> None:
        """A new AVC sequence header mid-recording: its SPS/PPS go in-band from now on."""
        record = header[5:]
        config = AvcConfig.parse(record)
        self._length_size = config.nal_length_size
        self._params = b"" if record == self._init_params else _inband(
            config, self._init_length_size)

    def media(self, kind: int, body: bytes, timestamp_ms: int) -> bool:
        """One FLV media tag body (NALU or raw AAC); False when it had no stream here."""
        dts = timestamp_ms - self.origin_ms
        if kind == TAG_VIDEO:
            stream = self._video
            cts = int.from_bytes(body[2:5], "big", signed=True)
            data = body[5:]
            keyframe = body[0] >> 4 == 1
            if self._length_size != self._init_length_size:
                data = b"".join(len(nal).to_bytes(self._init_length_size, "big") + nal
                                for nal in split_avcc(data, self._length_size))
            if keyframe and self._params:
                data = self._params + data
        else:
            stream = self._audio
            cts, data, keyframe = 0, body[2:], True
        if stream is None or dts < 0:
            return False
        dts = max(dts, self._last[kind] + 1)  # MP4 wants each track's times to rise
        self._last[kind] = dts
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = MS
        packet.dts = dts
        packet.pts = max(dts + cts, dts)
        packet.is_keyframe = keyframe
        self.end_ms = max(self.end_ms, dts + max(cts, 0))
        self._container.mux(packet)
        return True

    def close(self) -> None:
        """Write the last fragment and the trailer."""
        try:
            self._container.close()
        finally:
            self.files.close()
