"""Every H.264 profile browsers decode, in every spelling of profile-level-id: the parser (as
libwebrtc reads RFC 6184's profile-level-id), the publisher's codec choice, co-host matching,
and real WHIP/WHEP sessions whose answers keep the publisher's own spelling."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import loopback_only, play
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.codecs import (
    ACCEPTED_H264,
    H264Profile,
    describe,
    parse_profile_level_id,
    publisher_preferences,
    restrict_to,
    same_codec,
    viewer_offers,
    viewer_preferences,
)
from sfu.errors import UnsupportedCodec
from sfu.node import NODE_KEY
from shopcast.config import Config

CB = H264Profile.CONSTRAINED_BASELINE


# --- the parser -----------------------------------------------------------------------------

SPELLINGS = [
    # Constrained Baseline: profile_idc 0x42 with constraint_set1, whatever else is set
    ("42e01f", CB),  # constraint_set0+1+2: what browsers send
    ("42c01e", CB),  # constraint_set0+1: GStreamer's x264enc, level 3.0
    ("4240 1f", None),  # not six hex digits
    ("42401f", CB),  # constraint_set1 only
    ("42f01f", CB),  # constraint_set0+1+2+3
    ("42E01F", CB),  # upper case
    ("42f00b", CB),  # level 1b (level_idc 11 with constraint_set3)
    ("4d801f", CB),  # Main with constraint_set0: decodable as Constrained Baseline
    ("4dc01f", CB),
    ("58c01f", CB),  # Extended with constraint_set0+1
    # Baseline: 0x42 without constraint_set1
    ("42001f", H264Profile.BASELINE),
    ("42801f", H264Profile.BASELINE),
    ("42a01f", H264Profile.BASELINE),
    ("58801f", H264Profile.BASELINE),
    # Main: 0x4d without constraint_set0 (constraint_set1 may be set: OBS/x264 send 4d40xx)
    ("4d001f", H264Profile.MAIN),
    ("4d4028", H264Profile.MAIN),
    ("4d0032", H264Profile.MAIN),
    # High
    ("64001f", H264Profile.HIGH),
    ("640028", H264Profile.HIGH),
    ("640034", H264Profile.HIGH),
    ("640c1f", H264Profile.CONSTRAINED_HIGH),
    ("f4001f", H264Profile.PREDICTIVE_HIGH_444),
    # nothing: unknown profile, reserved bits, unknown level, not hex, wrong length
    ("6e001f", None),  # High 10
    ("64401f", None),  # High with constraint_set1: no profile libwebrtc names
    ("42e80f", None),  # reserved low bits set
    ("42e01d", None),  # level_idc 29 is no level
    ("42e000", None),
    ("000000", None),
    ("42e0zz", None),
    ("42e01", None),
    ("42e01f0", None),
    ("", None),
]


@pytest.mark.parametrize(("value", "profile"), SPELLINGS, ids=[s[0] or "empty" for s in SPELLINGS])
def test_profile_level_id_spellings(value: str, profile: H264Profile | None) -> None:
    assert parse_profile_level_id(value) is profile


def test_the_parser_agrees_with_aiortcs_on_every_flags_byte() -> None:
    """aiortc matches offers with its own port of libwebrtc's parser: if ours differed, the
    SFU would choose a codec that aiortc then refuses (or the reverse)."""
    names = {p.name: p for p in H264Profile}
    for level in ("1f", "0b", "34", "1d"):
        for profile_idc in (0x00, 0x42, 0x4D, 0x58, 0x64, 0x6E, 0xF4, 0xFF):
            for flags in range(256):
                value = f"{profile_idc:02x}{flags:02x}{level}"
                try:
                    theirs = names[sdp.parse_h264_profile_level_id(value)[0].name[8:]]
                except ValueError:
                    theirs = None
                assert parse_profile_level_id(value) is theirs, value


# --- the publisher's codec ------------------------------------------------------------------


def h264(plid: str | None, mode: str = "1") -> tuple[str, dict[str, object]]:
    params: dict[str, object] = {"packetization-mode": mode}
    if plid is not None:
        params["profile-level-id"] = plid
    return ("H264", params)


def chosen(offered: list[tuple[str, dict[str, object]]]) -> str:
    prefs = publisher_preferences("video", offered)
    assert prefs, "nothing chosen"
    assert [p.mimeType for p in prefs[1:]] == ["video/rtx"]
    return describe(prefs[0])


@pytest.mark.parametrize(("offered", "expected"), [
    ([h264("640028"), h264("4d4028"), h264("42001f"), h264("42c01e")],
     "H.264 Constrained Baseline"),
    ([h264("640028"), h264("4d4028"), h264("42001f"), ("VP8", {})], "H.264 Baseline"),
    ([h264("640028"), ("VP8", {}), h264("4d4028")], "H.264 Main"),
    ([h264("640028"), h264("640c28"), ("VP8", {})], "H.264 Constrained High"),
    ([("VP8", {}), h264("640028")], "H.264 High"),
    ([h264(None)], "H.264 Constrained Baseline"),  # no profile-level-id: 42e01f
    # packetization-mode 1 of any profile beats mode 0 of a better one, and VP8 beats mode 0
    ([h264("42e01f", "0"), h264("640028")], "H.264 High"),
    ([h264("42e01f", "0"), ("VP8", {})], "VP8"),
    ([h264("640028", "0"), h264("42e01f", "0")],
     "H.264 Constrained Baseline (packetization-mode 0)"),
    ([h264("640028", "0")], "H.264 High (packetization-mode 0)"),
    # what no browser decodes is not chosen
    ([h264("f4001f"), h264("6e001f"), ("VP8", {})], "VP8"),
], ids=["cb-first", "baseline", "main-over-vp8", "constrained-high", "high", "default-plid",
        "mode1-first", "vp8-over-mode0", "mode0-cb", "mode0-high", "444-not-chosen"])
def test_publisher_preference_order(
    offered: list[tuple[str, dict[str, object]]], expected: str
) -> None:
    assert chosen(offered) == expected


def test_publisher_offering_only_unknown_h264_gets_nothing() -> None:
    assert publisher_preferences("video", [h264("f4001f"), h264("zzzzzz")]) == []


def test_every_accepted_profile_is_negotiable_by_aiortc() -> None:
    """One capability per accepted profile and packetization mode, so that aiortc's answer
    can carry it: the choice always exists in aiortc's list."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    for profile, plid in ACCEPTED_H264:
        for mode in ("1", "0"):
            prefs = publisher_preferences("video", [h264(plid, mode)])
            assert prefs[0] in capabilities
            assert parse_profile_level_id(str(prefs[0].parameters["profile-level-id"])) is profile


# --- co-hosts and viewers -------------------------------------------------------------------


def room_codec(plid: str, mode: str = "1") -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType="video/H264", clockRate=90000, payloadType=102,
        parameters={"level-asymmetry-allowed": "1", "packetization-mode": mode,
                    "profile-level-id": plid},
    )


def test_a_cohost_matches_the_rooms_profile_in_any_spelling_or_level() -> None:
    room = room_codec("42c01e")  # a GStreamer anchor
    prefs = restrict_to("video", [h264("42e01f"), ("VP8", {})], room)
    assert [p.mimeType for p in prefs] == ["video/H264", "video/rtx"]
    assert same_codec(prefs[0], room)
    # the room is High: a browser co-host offering CB first still sends High
    high = room_codec("640032")
    prefs = restrict_to("video", [h264("42e01f"), h264("4d001f"), h264("64001f")], high)
    assert describe(prefs[0]) == "H.264 High"


@pytest.mark.parametrize(("offered", "room"), [
    ([h264("42e01f"), h264("42001f")], "640028"),  # another profile
    ([h264("640028", "0")], "640028"),  # the profile, in another packetization mode
    ([("VP8", {})], "42e01f"),
    ([h264("42001f")], "42e01f"),  # Baseline is not Constrained Baseline
], ids=["profile", "mode", "codec", "baseline-vs-cb"])
def test_a_cohost_without_the_rooms_profile_is_refused(
    offered: list[tuple[str, dict[str, object]]], room: str
) -> None:
    assert restrict_to("video", offered, room_codec(room)) == []


def test_a_cohost_sends_opus_whatever_its_opus_preferences() -> None:
    room = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                 payloadType=111, parameters={})
    prefs = restrict_to("audio", [("opus", {"minptime": "10", "useinbandfec": "1"})], room)
    assert [(p.mimeType, p.clockRate, p.channels) for p in prefs] == [("audio/opus", 48000, 2)]
    assert restrict_to("audio", [("PCMU", {})], room) == []


def test_a_room_codec_aiortc_cannot_negotiate_is_refused_not_widened() -> None:
    """An empty preference list would let aiortc pick any codec: refuse instead."""
    with pytest.raises(UnsupportedCodec):
        viewer_preferences(room_codec("f4001f"))


def test_a_viewer_is_offered_the_publishers_profile() -> None:
    room = room_codec("4d4032")
    prefs = viewer_preferences(room)
    assert len(prefs) == 1 and describe(prefs[0]) == "H.264 Main"
    assert prefs[0] in RTCRtpSender.getCapabilities("video").codecs
    assert viewer_offers([h264("42e01f"), h264("4d001f")], room)
    assert not viewer_offers([h264("42e01f"), h264("64001f")], room)
    assert not viewer_offers([h264("4d001f", "0")], room)


# --- real sessions --------------------------------------------------------------------------


def fmtp_of(description: str, codec: str = "H264") -> list[str]:
    """The fmtp lines of ``codec``'s payload types in an SDP."""
    pts = [line.split()[0].split(":")[1] for line in description.splitlines()
           if line.startswith("a=rtpmap:") and line.split()[1].startswith(codec + "/")]
    return [line.split(" ", 1)[1] for line in description.splitlines()
            if any(line.startswith(f"a=fmtp:{pt} ") for pt in pts)]


@contextlib.asynccontextmanager
async def spelled_publisher(
    server: Any, room: str, registered: str, spelled: str
) -> AsyncIterator[str]:
    """An aiortc anchor offering only H.264 ``registered``, written ``spelled`` in its offer
    (as other encoders write it); yields the WHIP answer."""
    loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver(PaintedVideoTrack(colour="blue"), direction="sendonly")
    video.setCodecPreferences([
        c for c in RTCRtpSender.getCapabilities("video").codecs
        if c.mimeType == "video/H264" and c.parameters.get("profile-level-id") == registered
        and c.parameters.get("packetization-mode") == "1"
    ])
    pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp.replace(
            f"profile-level-id={registered}", f"profile-level-id={spelled}")
        assert f"profile-level-id={spelled}" in offer
        token = server.token(room, "anchor", "publish")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http, \
                http.post(f"{server.url}/whip/{room}", data=offer, headers=headers) as resp:
            answer = await resp.text()
            assert resp.status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        yield answer
    finally:
        await pc.close()


@pytest.fixture
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """Viewers in the test's process, or (``indirect`` param 2) in two worker processes."""
    return loopback_config(tmp_path, workers=getattr(request, "param", 0))


@pytest.mark.slow
@pytest.mark.parametrize(("registered", "spelled", "profile", "config"), [
    ("42e01f", "42c01e", "Constrained Baseline", 0),
    ("4d001f", "4d4028", "Main", 0),
    ("64001f", "640032", "High", 0),
    ("64001f", "640028", "High", 2),
], ids=["cb-42c01e", "main-4d4028", "high-640032", "high-640028-two-workers"],
    indirect=["config"])
async def test_answers_keep_the_publishers_spelling_and_a_viewer_decodes(
    server: Any, registered: str, spelled: str, profile: str
) -> None:
    room = f"spell{spelled}"
    async with spelled_publisher(server, room, registered, spelled) as answer:
        # the anchor's encoder is told to send what it offered, in its own words
        assert [f for f in fmtp_of(answer) if f"profile-level-id={spelled}" in f], answer
        assert fmtp_of(answer) == [f for f in fmtp_of(answer) if spelled in f], "one H.264"
        node = server.app[NODE_KEY]
        await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "anchor live")
        video = next(p for p in node.rooms[room].producers() if p.kind == "video")
        assert video.codec.parameters["profile-level-id"] == spelled
        assert describe(video.codec) == f"H.264 {profile}"
        viewer = await play(server.url, room, server.token(room, "v", "subscribe"))
        try:
            await wait_for(lambda: viewer.painted >= 20, 15, "20 painted frames at the viewer")
            # the viewer was offered the publisher's profile, with the publisher's parameters
            viewer_answer = viewer.pc.remoteDescription.sdp
            assert fmtp_of(viewer_answer) == [f for f in fmtp_of(answer) if spelled in f]
        finally:
            await viewer.close()
