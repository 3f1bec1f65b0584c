"""FLV video and audio tag bodies as an RTMP encoder sends them (H.264 + AAC only).

RTMP carries the same tag bodies as an FLV file: one byte of flags, a packet type, then the
codec's payload. ShopCast forwards H.264 and transcodes AAC, so anything else is refused here
with an ``UnsupportedCodec`` that names the codec (the RTMP door shows it to the encoder's
operator); a body that cannot be read raises ``MalformedMedia``, never an IndexError.

Enhanced RTMP (the FourCC form: OBS 29.1+, FFmpeg 6.1+) is read too, so an encoder set to HEVC or
AV1 gets a clear refusal instead of garbage; its ``avc1`` and ``mp4a`` forms are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.errors import MalformedMedia, UnsupportedCodec

# Video frame types
FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE = 3
FRAME_GENERATED_KEY = 4
FRAME_INFO = 5  # video info / command frame: no picture

CODEC_AVC = 7

# AVC packet types (legacy form; the Enhanced RTMP ones are mapped onto these)
AVC_SEQUENCE_HEADER = 0
AVC_NALU = 1
AVC_END_OF_SEQUENCE = 2

SOUND_AAC = 10
_SOUND_EX_HEADER = 9

AAC_SEQUENCE_HEADER = 0
AAC_RAW = 1

_VIDEO_CODECS = {
    1: "JPEG",
    2: "Sorenson H.263",
    3: "Screen Video",
    4: "VP6",
    5: "VP6 with alpha",
    6: "Screen Video v2",
    12: "HEVC",  # the pre-standard "codec id 12" extension
    13: "AV1",
}
_VIDEO_FOURCC = {b"hvc1": "HEVC", b"av01": "AV1", b"vp09": "VP9", b"vp08": "VP8"}
_AUDIO_CODECS = {
    0: "linear PCM",
    1: "ADPCM",
    2: "MP3",
    3: "linear PCM",
    4: "Nellymoser",
    5: "Nellymoser",
    6: "Nellymoser",
    7: "G.711 A-law",
    8: "G.711 mu-law",
    11: "Speex",
    13: "Opus",  # a non-standard extension some servers use
    14: "MP3",
    15: "device-specific audio",
}
_AUDIO_FOURCC = {
    b"Opus": "Opus",
    b"fLaC": "FLAC",
    b"ac-3": "AC-3",
    b"ec-3": "E-AC-3",
    b".mp3": "MP3",
}

# Enhanced RTMP video packet types
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_SEQUENCE_END = 2
_EX_CODED_FRAMES_X = 3  # no composition time: it is 0
_EX_METADATA = 4
# Enhanced RTMP audio packet types
_EX_AUDIO_SEQUENCE_END = 2
_EX_AUDIO_MULTICHANNEL_CONFIG = 4


@dataclass(frozen=True, slots=True)
class VideoTag:
    """One H.264 video tag: ``data`` is an AVCDecoderConfigurationRecord (sequence header),
    AVCC-framed NAL units (NALU) or empty (end of sequence)."""

    frame_type: int
    codec_id: int
    avc_packet_type: int
    composition_time_ms: int  # pts - dts, signed; non-zero with B-frames
    data: bytes

    @property
    def keyframe(self) -> bool:
        return self.frame_type == FRAME_KEY or self.frame_type == FRAME_GENERATED_KEY


@dataclass(frozen=True, slots=True)
class AudioTag:
    """One AAC audio tag: ``data`` is an AudioSpecificConfig (sequence header) or one raw
    AAC frame."""

    sound_format: int
    aac_packet_type: int
    data: bytes


def _fourcc_name(fourcc: bytes, known: dict[bytes, str]) -> str:
    """A codec's name for a refusal: the known one, else its FourCC as text (or hex)."""
    if fourcc in known:
        return known[fourcc]
    return "FourCC " + (fourcc.decode("ascii", "replace") if fourcc.isascii() else fourcc.hex())


def _video_refusal(name: str) -> UnsupportedCodec:
    return UnsupportedCodec(f"RTMP video is {name}; ShopCast needs H.264")


def _audio_refusal(name: str) -> UnsupportedCodec:
    return UnsupportedCodec(f"RTMP audio is {name}; ShopCast needs AAC")


def parse_video_tag(body: bytes) -> VideoTag | None:
    """The fields of a video tag body; None when it carries no media (empty, info/command frame,
    Enhanced RTMP metadata). Raises UnsupportedCodec for anything but H.264, MalformedMedia for
    a body that cannot be read."""
    if not body:
        return None
    first = body[0]
    if first & 0x80:
        return _parse_ex_video(body)
    frame_type = first >> 4
    codec_id = first & 0x0F
    if codec_id != CODEC_AVC:
        raise _video_refusal(_VIDEO_CODECS.get(codec_id, f"codec id {codec_id}"))
    if not 1 <= frame_type <= 5:
        raise MalformedMedia(f"RTMP video tag has frame type {frame_type}")
    if frame_type == FRAME_INFO:
        return None
    if len(body) < 5:
        raise MalformedMedia(f"RTMP H.264 tag of {len(body)} bytes is truncated")
    packet_type = body[1]
    if packet_type > AVC_END_OF_SEQUENCE:
        raise MalformedMedia(f"RTMP H.264 tag has packet type {packet_type}")
    cto = (body[2] << 16) | (body[3] << 8) | body[4]
    if cto & 0x800000:
        cto -= 0x1000000
    return VideoTag(frame_type, codec_id, packet_type, cto, body[5:])


def _parse_ex_video(body: bytes) -> VideoTag | None:
    """Enhanced RTMP: [1 | frame type (3) | packet type (4)] FourCC [composition time] data."""
    if len(body) < 5:
        raise MalformedMedia(f"Enhanced RTMP video tag of {len(body)} bytes is truncated")
    frame_type = (body[0] >> 4) & 0x07
    packet_type = body[0] & 0x0F
    fourcc = body[1:5]
    if fourcc != b"avc1":
        raise _video_refusal(_fourcc_name(fourcc, _VIDEO_FOURCC))
    if not 1 <= frame_type <= 5:
        raise MalformedMedia(f"Enhanced RTMP video tag has frame type {frame_type}")
    if frame_type == FRAME_INFO or packet_type == _EX_METADATA:
        return None
    if packet_type == _EX_SEQUENCE_START:
        return VideoTag(frame_type, CODEC_AVC, AVC_SEQUENCE_HEADER, 0, body[5:])
    if packet_type == _EX_SEQUENCE_END:
        return VideoTag(frame_type, CODEC_AVC, AVC_END_OF_SEQUENCE, 0, body[5:])
    if packet_type == _EX_CODED_FRAMES_X:
        return VideoTag(frame_type, CODEC_AVC, AVC_NALU, 0, body[5:])
    if packet_type == _EX_CODED_FRAMES:
        if len(body) < 8:
            raise MalformedMedia(f"Enhanced RTMP video tag of {len(body)} bytes is truncated")
        cto = (body[5] << 16) | (body[6] << 8) | body[7]
        if cto & 0x800000:
            cto -= 0x1000000
        return VideoTag(frame_type, CODEC_AVC, AVC_NALU, cto, body[8:])
    raise UnsupportedCodec(
        f"RTMP video uses Enhanced RTMP packet type {packet_type} (multitrack or other "
        "extensions); ShopCast needs plain H.264"
    )


def parse_audio_tag(body: bytes) -> AudioTag | None:
    """The fields of an audio tag body; None when it carries no media (empty, Enhanced RTMP
    sequence end or channel-layout config). Raises UnsupportedCodec for anything but AAC,
    MalformedMedia for a body that cannot be read."""
    if not body:
        return None
    sound_format = body[0] >> 4
    if sound_format == _SOUND_EX_HEADER:
        return _parse_ex_audio(body)
    if sound_format != SOUND_AAC:
        raise _audio_refusal(_AUDIO_CODECS.get(sound_format, f"sound format {sound_format}"))
    if len(body) < 2:
        raise MalformedMedia(f"RTMP AAC tag of {len(body)} bytes is truncated")
    packet_type = body[1]
    if packet_type > AAC_RAW:
        raise MalformedMedia(f"RTMP AAC tag has packet type {packet_type}")
    return AudioTag(sound_format, packet_type, body[2:])


def _parse_ex_audio(body: bytes) -> AudioTag | None:
    """Enhanced RTMP v2: [9 | packet type (4)] FourCC data."""
    if len(body) < 5:
        raise MalformedMedia(f"Enhanced RTMP audio tag of {len(body)} bytes is truncated")
    packet_type = body[0] & 0x0F
    fourcc = body[1:5]
    if fourcc != b"mp4a":
        raise _audio_refusal(_fourcc_name(fourcc, _AUDIO_FOURCC))
    if packet_type in (_EX_AUDIO_SEQUENCE_END, _EX_AUDIO_MULTICHANNEL_CONFIG):
        return None
    if packet_type == _EX_SEQUENCE_START:
        return AudioTag(SOUND_AAC, AAC_SEQUENCE_HEADER, body[5:])
    if packet_type == _EX_CODED_FRAMES:
        return AudioTag(SOUND_AAC, AAC_RAW, body[5:])
    raise UnsupportedCodec(
        f"RTMP audio uses Enhanced RTMP packet type {packet_type} (multitrack or other "
        "extensions); ShopCast needs plain AAC"
    )
