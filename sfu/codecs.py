"""Codec choice for each leg and keyframe detection on RTP payloads.

Anchors are asked for H.264 so FLV is a remux: every profile browsers decode is accepted
(Constrained Baseline in any spelling of ``profile-level-id``, Baseline, Main, Constrained
High, High), packetization-mode 1 first. VP8 is accepted when a publisher offers no usable
H.264. Audio is Opus. The SFU never decodes a publisher's video for viewers, so any of these
profiles is forwarded as it is, and viewers are offered exactly what the publisher sends.
"""

from __future__ import annotations

import enum
import string
from collections.abc import Callable, Mapping, Sequence

from aiortc import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCRtpTransceiver,
)

from sfu.aiortc_private import add_video_codecs, rewrite_negotiated_codecs
from sfu.errors import UnsupportedCodec

KeyframeTest = Callable[[bytes], bool]
Offered = Sequence[tuple[str, Mapping[str, object]]]

# H.264 NAL unit types (RFC 6184)
NAL_IDR = 5
NAL_SPS = 7
NAL_STAP_A = 24
NAL_FU_A = 28


# --- H.264 profiles (RFC 6184 section 8.1, as libwebrtc reads profile-level-id) ---


class H264Profile(enum.Enum):
    CONSTRAINED_BASELINE = "Constrained Baseline"
    BASELINE = "Baseline"
    MAIN = "Main"
    CONSTRAINED_HIGH = "Constrained High"
    HIGH = "High"
    PREDICTIVE_HIGH_444 = "High 4:4:4 Predictive"


def _bits(pattern: str) -> tuple[int, int]:
    """``"x1xx0000"`` -> (mask of the fixed bits, their value)."""
    mask = value = 0
    for char in pattern:
        mask, value = mask << 1 | (char != "x"), value << 1 | (char == "1")
    return mask, value


# (profile_idc, constraint flags byte as a bit pattern, profile), first match wins. The flags
# are constraint_set0..5 then two reserved zero bits: Baseline with constraint_set1 (0x40) is
# Constrained Baseline whatever else is set (42e0, 42c0, 4240, 42f0 ...); Main with
# constraint_set0 (4d80) is too.
_PROFILE_PATTERNS: tuple[tuple[int, tuple[int, int], H264Profile], ...] = (
    (0x42, _bits("x1xx0000"), H264Profile.CONSTRAINED_BASELINE),
    (0x4D, _bits("1xxx0000"), H264Profile.CONSTRAINED_BASELINE),
    (0x58, _bits("11xx0000"), H264Profile.CONSTRAINED_BASELINE),
    (0x42, _bits("x0xx0000"), H264Profile.BASELINE),
    (0x58, _bits("10xx0000"), H264Profile.BASELINE),
    (0x4D, _bits("0x0x0000"), H264Profile.MAIN),
    (0x64, _bits("00000000"), H264Profile.HIGH),
    (0x64, _bits("00001100"), H264Profile.CONSTRAINED_HIGH),
    (0xF4, _bits("00000000"), H264Profile.PREDICTIVE_HIGH_444),
)
# level_idc values of H.264 Table A-1 (11 with constraint_set3 is level 1b)
_LEVELS = frozenset((10, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52))
# A codec without profile-level-id is Constrained Baseline 3.1, as libwebrtc and aiortc assume
DEFAULT_PROFILE_LEVEL_ID = "42e01f"

# What the SFU accepts from a publisher, preferred first, and the profile-level-id it
# registers with aiortc for each (level 3.1; levels are not compared when matching)
ACCEPTED_H264: tuple[tuple[H264Profile, str], ...] = (
    (H264Profile.CONSTRAINED_BASELINE, "42e01f"),
    (H264Profile.BASELINE, "42001f"),
    (H264Profile.MAIN, "4d001f"),
    (H264Profile.CONSTRAINED_HIGH, "640c1f"),
    (H264Profile.HIGH, "64001f"),
)
# fmtp parameters that describe the sender's stream (RFC 6184 8.1), not the codec choice
_SENDER_ONLY = frozenset(("sprop-parameter-sets", "sprop-level-parameter-sets"))
PACKETIZATION_MODES = ("1", "0")  # single NAL unit mode only when nothing better is offered


def parse_profile_level_id(value: str) -> H264Profile | None:
    """The profile a ``profile-level-id`` names, or None if it names none (or a bad level).

    Decided by profile_idc and the constraint flags, never by the string: Constrained
    Baseline has many spellings and encoders use them all (GStreamer sends 42c01e)."""
    if len(value) != 6 or any(c not in string.hexdigits for c in value):
        return None
    profile_idc, flags, level_idc = bytes.fromhex(value)
    if level_idc not in _LEVELS:
        return None
    for idc, (mask, bits), profile in _PROFILE_PATTERNS:
        if profile_idc == idc and flags & mask == bits:
            return profile
    return None


def h264_profile(parameters: Mapping[str, object]) -> H264Profile | None:
    """The profile of an H.264 codec's fmtp parameters (absent = Constrained Baseline)."""
    return parse_profile_level_id(
        str(parameters.get("profile-level-id", DEFAULT_PROFILE_LEVEL_ID))
    )


def packetization_mode(parameters: Mapping[str, object]) -> str:
    return str(parameters.get("packetization-mode", "0"))


def _h264_key(parameters: Mapping[str, object]) -> tuple[H264Profile | None, str]:
    return h264_profile(parameters), packetization_mode(parameters)


def same_codec(
    a: RTCRtpCodecParameters | RTCRtpCodecCapability,
    b: RTCRtpCodecParameters | RTCRtpCodecCapability,
) -> bool:
    """Whether one codec can stand for the other on the wire: the same name, clock rate and
    channels, and for H.264 the same profile and packetization mode (levels may differ, as
    in libwebrtc). Other fmtp parameters (Opus's ``useinbandfec``, ...) are preferences."""
    if (a.mimeType.lower(), a.clockRate, a.channels) != (b.mimeType.lower(), b.clockRate,
                                                          b.channels):
        return False
    if a.mimeType.lower() == "video/h264":
        key = _h264_key(a.parameters)
        return key[0] is not None and key == _h264_key(b.parameters)
    return True


def describe(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> str:
    """A codec as people name it: "H.264 High", "VP8", "opus"."""
    if codec.mimeType.lower() != "video/h264":
        return codec.mimeType.split("/")[-1]
    profile, mode = _h264_key(codec.parameters)
    name = profile.value if profile else "unknown profile"
    return f"H.264 {name}" + (" (packetization-mode 0)" if mode == "0" else "")


def _register_h264_profiles() -> None:
    """aiortc 1.16 negotiates H.264 only as 42001f/42e01f, packetization-mode 1. It compares
    profiles (not strings) when matching an offer, so one entry per accepted profile and
    mode makes every spelling of it negotiable."""
    add_video_codecs([
        ("video/H264", {"level-asymmetry-allowed": "1", "packetization-mode": mode,
                        "profile-level-id": plid})
        for mode in PACKETIZATION_MODES for _profile, plid in ACCEPTED_H264
    ])


_register_h264_profiles()


def _capability(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> RTCRtpCodecCapability:
    return RTCRtpCodecCapability(
        mimeType=codec.mimeType,
        clockRate=codec.clockRate,
        channels=codec.channels,
        parameters=dict(codec.parameters),
    )


def _offers(offered: Offered, codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    """Whether the offer lists ``codec`` (by name; for H.264 by profile and mode)."""
    name = codec.mimeType.split("/")[-1].lower()
    for offered_name, params in offered:
        if offered_name.lower() != name:
            continue
        if name != "h264" or _h264_key(params) == _h264_key(codec.parameters):
            return True
    return False


def _local(kind: str) -> list[RTCRtpCodecCapability]:
    return RTCRtpSender.getCapabilities(kind).codecs


def _rtx(local: list[RTCRtpCodecCapability]) -> list[RTCRtpCodecCapability]:
    return [c for c in local if c.mimeType.lower() == "video/rtx"][:1]


def _local_h264(
    local: list[RTCRtpCodecCapability], key: tuple[H264Profile | None, str]
) -> list[RTCRtpCodecCapability]:
    return [c for c in local if c.mimeType.lower() == "video/h264"
            and _h264_key(c.parameters) == key][:1]


def publisher_preferences(kind: str, offered: Offered) -> list[RTCRtpCodecCapability]:
    """The one codec to accept from an anchor, given the offer's (name, parameters) pairs.

    Exactly one video codec is chosen so every packet of the track has one payload type:
    H.264 with packetization-mode 1, profiles in ``ACCEPTED_H264`` order (Constrained
    Baseline, Baseline, Main, Constrained High, High), then VP8, then H.264 in single NAL
    unit mode (packetization-mode 0) when nothing else is offered.
    """
    local = _local(kind)
    if kind == "audio":
        return [c for c in local if c.mimeType.lower() == "audio/opus"]
    h264 = {_h264_key(params) for name, params in offered if name.lower() == "h264"}
    vp8 = any(name.lower() == "vp8" for name, _ in offered)
    for mode in PACKETIZATION_MODES:
        for profile, _plid in ACCEPTED_H264:
            if (profile, mode) in h264:
                return _local_h264(local, (profile, mode)) + _rtx(local)
        if vp8:
            return [c for c in local if c.mimeType.lower() == "video/vp8"][:1] + _rtx(local)
    return []


def restrict_to(
    kind: str, offered: Offered, codec: RTCRtpCodecParameters
) -> list[RTCRtpCodecCapability]:
    """What a co-host may send: the room's ``codec`` (and RTX), if its offer lists it; else
    nothing. Viewers negotiated exactly that codec, so an H.264 co-host must send the room's
    profile and packetization mode (any level, any spelling of the profile)."""
    if not _offers(offered, codec):
        return []
    local = _local(kind)
    chosen = [c for c in local if same_codec(c, codec)][:1]
    return chosen + _rtx(local) if chosen and kind == "video" else chosen


def answer_as_offered(
    transceiver: RTCRtpTransceiver, prefs: Sequence[RTCRtpCodecCapability], offered: Offered
) -> None:
    """Answer a publisher with its own fmtp for the chosen codec (its profile-level-id, so the
    encoder sends what it offered), not with the spelling aiortc registered."""
    chosen = next((c for c in prefs if c.mimeType.lower() == "video/h264"), None)
    if chosen is None:
        return
    key = _h264_key(chosen.parameters)
    own = next((params for name, params in offered
                if name.lower() == "h264" and _h264_key(params) == key), None)
    if own is not None:  # its parameter sets describe what it sends: not ours to echo
        _answer_h264_with(transceiver, {k: v for k, v in own.items() if k not in _SENDER_ONLY})


def answer_with(transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters) -> None:
    """Answer a viewer with the room codec's exact fmtp (the publisher's profile-level-id)."""
    if codec.mimeType.lower() == "video/h264":
        _answer_h264_with(transceiver, codec.parameters)


def _answer_h264_with(transceiver: RTCRtpTransceiver, parameters: Mapping[str, object]) -> None:
    """The negotiated H.264 codec of the same profile and mode takes ``parameters``."""
    exact: dict[str, int | str | None] = {
        k: v for k, v in parameters.items() if v is None or isinstance(v, int | str)
    }
    key = _h264_key(exact)

    def rewrite(negotiated: RTCRtpCodecParameters) -> None:
        if negotiated.mimeType.lower() == "video/h264" and _h264_key(negotiated.parameters) == key:
            negotiated.parameters = dict(exact)

    rewrite_negotiated_codecs(transceiver, rewrite)


def viewer_offers(offered: Offered, codec: RTCRtpCodecParameters) -> bool:
    """Whether a viewer's offer can receive the room's ``codec`` (for H.264: its profile)."""
    return _offers(offered, codec)


def viewer_preferences(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """A viewer is offered exactly the publisher's codec: the SFU forwards, it never transcodes.

    For H.264 that is aiortc's entry for the publisher's profile; ``answer_with`` then puts
    the publisher's own parameters in the answer. No RTX: retransmissions go out on the media
    SSRC with the original sequence number.
    """
    if codec.mimeType.lower() != "video/h264":
        return [_capability(codec)]
    chosen = _local_h264(_local("video"), _h264_key(codec.parameters))
    if not chosen:  # never an empty list: aiortc reads that as "any codec"
        raise UnsupportedCodec(f"this room's video is {describe(codec)}, which is not forwarded")
    return chosen


def is_h264_keyframe_start(payload: bytes) -> bool:
    """True when the packet opens a decodable picture: it carries an SPS or starts an IDR."""
    if not payload:
        return False
    nal = payload[0] & 0x1F
    if nal == NAL_SPS or nal == NAL_IDR:
        return True
    if nal == NAL_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            inner = payload[pos + 2] & 0x1F
            if inner == NAL_SPS or inner == NAL_IDR:
                return True
            pos += 2 + size
        return False
    if nal == NAL_FU_A and len(payload) > 1:
        fu_header = payload[1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) == NAL_IDR
    return False


def is_vp8_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a VP8 key frame (RFC 7741 payload descriptor)."""
    if len(payload) < 2:
        return False
    first = payload[0]
    if not (first & 0x10) or (first & 0x07) != 0:  # S bit and partition index 0
        return False
    pos = 1
    if first & 0x80:  # X: extension byte follows
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 1 or 2 bytes
            pos += 2 if (pos < len(payload) and payload[pos] & 0x80) else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    return pos < len(payload) and (payload[pos] & 0x01) == 0


def keyframe_detector(codec_name: str) -> KeyframeTest:
    """The keyframe test for a codec name; audio packets are always a valid start."""
    name = codec_name.lower()
    if name == "h264":
        return is_h264_keyframe_start
    if name == "vp8":
        return is_vp8_keyframe_start
    return _always


def _always(payload: bytes) -> bool:
    return True

