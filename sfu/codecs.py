"""Codec choice for each leg and keyframe detection on RTP payloads.

Anchors are asked for H.264 Constrained Baseline (packetization-mode 1) so FLV is a remux;
VP8 is accepted when a publisher offers no usable H.264. Audio is Opus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiortc import RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpSender

KeyframeTest = Callable[[bytes], bool]

H264_PROFILES = ("42e01f", "42001f")  # Constrained Baseline first, then Baseline 3.1

# H.264 NAL unit types (RFC 6184)
NAL_IDR = 5
NAL_SPS = 7
NAL_STAP_A = 24
NAL_FU_A = 28


def _capability(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> RTCRtpCodecCapability:
    return RTCRtpCodecCapability(
        mimeType=codec.mimeType,
        clockRate=codec.clockRate,
        channels=codec.channels,
        parameters=dict(codec.parameters),
    )


def _h264_profile(parameters: Mapping[str, object]) -> str:
    """Profile of an H.264 codec, level ignored ("42e0" = Constrained Baseline)."""
    return str(parameters.get("profile-level-id", "42e01f"))[:4].lower()


def publisher_preferences(
    kind: str, offered: Sequence[tuple[str, Mapping[str, object]]]
) -> list[RTCRtpCodecCapability]:
    """The one codec to accept from an anchor, given the offer's (name, parameters) pairs.

    Exactly one video codec is chosen so every packet of the track has one payload type:
    H.264 Constrained Baseline, then Baseline (packetization-mode 1), then VP8.
    """
    local = RTCRtpSender.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in local if c.mimeType.lower() == "audio/opus"]
    h264 = {
        _h264_profile(params)
        for name, params in offered
        if name.lower() == "h264" and str(params.get("packetization-mode", "0")) == "1"
    }
    for profile in H264_PROFILES:
        if profile[:4] in h264:
            chosen = [
                c
                for c in local
                if c.mimeType.lower() == "video/h264"
                and c.parameters.get("profile-level-id") == profile
            ]
            return chosen[:1] + _rtx(local)
    if any(name.lower() == "vp8" for name, _ in offered):
        return [c for c in local if c.mimeType.lower() == "video/vp8"][:1] + _rtx(local)
    return []


def _rtx(local: list[RTCRtpCodecCapability]) -> list[RTCRtpCodecCapability]:
    return [c for c in local if c.mimeType.lower() == "video/rtx"][:1]


def restrict_to(
    prefs: list[RTCRtpCodecCapability], codec: RTCRtpCodecParameters
) -> list[RTCRtpCodecCapability]:
    """``prefs`` narrowed to ``codec`` (and its RTX); empty if the publisher can't send it.

    Every publisher of a room sends the anchor's codec: viewers negotiated exactly that."""
    chosen = [
        c for c in prefs
        if c.mimeType.lower() == codec.mimeType.lower() and c.parameters == codec.parameters
    ]
    return chosen + [c for c in prefs if c.mimeType.lower().endswith("/rtx")] if chosen else []


def viewer_preferences(codec: RTCRtpCodecParameters) -> list[RTCRtpCodecCapability]:
    """A viewer is offered exactly the publisher's codec: the SFU forwards, it never transcodes.

    No RTX: retransmissions go out on the media SSRC with the original sequence number.
    """
    return [_capability(codec)]


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

