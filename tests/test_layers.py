"""Video layers (sfu/layers.py): an anchor's second video track is its slot's low layer, and a
viewer's ``?quality=`` picks the layer it is sent. Real aiortc peers on loopback, decoding."""

from __future__ import annotations

from typing import Any

import aiohttp
import av
import pytest
from aiortc.rtp import RTCP_PSFB_APP, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpRrPacket, RtcpRtpfbPacket
from waiting import wait_for

from loadtest.clients import SignalingError, Viewer, play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack, dominant_colour
from sfu.consumer import Consumer
from sfu.errors import BadQuality
from sfu.layers import LayerPolicy, layer_for, parse_quality
from sfu.node import NODE_KEY
from sfu.offer import max_sections
from sfu.producer import Producer
from sfu.viewer import Viewer as ViewerLeg


class SmallPaintedTrack(PaintedVideoTrack):
    """The painted track scaled to 320x180: what an anchor page sends as its low layer."""

    async def recv(self) -> av.VideoFrame:
        frame = await super().recv()
        small = frame.reformat(width=320, height=180)
        small.pts, small.time_base = frame.pts, frame.time_base
        return small


class Pictures:
    """A viewer's decoded frames: size and dominant colour of each."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, tuple[int, int, int]]] = []

    def __call__(self, frame: av.VideoFrame) -> None:
        self.seen.append((frame.width, frame.height, dominant_colour(frame)))


def reddish(rgb: tuple[int, int, int]) -> bool:
    return rgb[0] > 150 and rgb[1] < 100 and rgb[2] < 100


def bluish(rgb: tuple[int, int, int]) -> bool:
    return rgb[2] > 150 and rgb[0] < 100 and rgb[1] < 100


# --- the pure parts ---------------------------------------------------------------------------


def test_quality_parses_the_three_values_and_defaults_to_auto() -> None:
    assert parse_quality(None) == "auto"
    assert parse_quality("") == "auto"
    assert [parse_quality(q) for q in ("auto", "high", "low")] == ["auto", "high", "low"]
    for bad in ("LOW", "medium", "low ", "1"):
        with pytest.raises(BadQuality):
            parse_quality(bad)


def test_a_publishers_offer_may_carry_its_low_layer_a_viewers_no_more_than_before() -> None:
    assert max_sections(1, "send") == 4  # audio, two video layers, the events channel
    assert max_sections(1) == 3
    assert max_sections(4, "send") == max_sections(4) == 9


class _Codec:
    payloadType = 102
    name = "H264"
    clockRate = 90000


def _producer(layer: str = "high") -> Producer:
    return Producer("video", _Codec(), publisher_id="p",  # type: ignore[arg-type]
                    request_keyframe=lambda ssrc: None, layer=layer)


def test_layer_for_picks_low_only_when_pinned_and_the_slot_has_an_open_one() -> None:
    high = _producer()
    assert layer_for(high, "low") is high  # a one-layer slot: its only layer
    high.low = low = _producer("low")
    assert layer_for(high, "low") is low
    assert layer_for(high, "high") is high
    assert layer_for(high, "auto") is high
    low.close()
    assert layer_for(high, "low") is high


def test_muting_a_slot_mutes_its_low_layer_too() -> None:
    high = _producer()
    high.low = low = _producer("low")
    high.set_muted(True)
    assert low.muted
    high.set_muted(False)
    assert not low.muted


# --- through the node -------------------------------------------------------------------------


async def _two_layer_anchor(server: Any, room: str) -> Any:
    anchor = await publish(
        server.url, room, server.token(room, "anchor", "publish"),
        PaintedVideoTrack(colour="red"), ToneAudioTrack(),
        low_video_track=SmallPaintedTrack(colour="blue"),
    )
    node = server.app[NODE_KEY]
    await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "anchor live")
    return anchor


async def _watch(server: Any, room: str, who: str, quality: str | None
                 ) -> tuple[Viewer, Pictures]:
    pictures = Pictures()
    viewer = await play(server.url, room, server.token(room, who, "subscribe"),
                        on_frame=pictures, quality=quality)
    return viewer, pictures


@pytest.mark.slow
async def test_viewers_pinned_to_low_and_high_decode_their_layer(server: Any) -> None:
    anchor = await _two_layer_anchor(server, "layers")
    node = server.app[NODE_KEY]
    room = node.rooms["layers"]
    video = [p for p in room.producers() if p.kind == "video"]
    assert len(video) == 1, "the low layer is not a producer of its own slot"
    assert video[0].low is not None and video[0].low.layer == "low"
    assert video[0].low.ssrc == video[0].ssrc, "both layers go out with the slot's SSRC"
    watching = [await _watch(server, "layers", who, quality)
                for who, quality in (("lo", "low"), ("hi", "high"), ("au", None))]
    try:
        await wait_for(lambda: all(len(p.seen) >= 30 for _, p in watching), 15,
                       "30 frames at every viewer")
        (_, low), (_, high), (_, auto) = watching
        for width, height, rgb in low.seen[-20:]:
            assert (width, height) == (320, 180) and bluish(rgb), (width, height, rgb)
        for pictures in (high, auto):
            for width, height, rgb in pictures.seen[-20:]:
                assert (width, height) == (640, 360) and reddish(rgb), (width, height, rgb)
        legs = [s for s in room.viewers.values() if isinstance(s, ViewerLeg)]
        pinned = {leg.identity: {c.producer.layer for c in leg.consumers
                                 if c.producer.kind == "video"} for leg in legs}
        assert pinned == {"lo": {"low"}, "hi": {"high"}, "au": {"high"}}
    finally:
        for viewer, _ in watching:
            await viewer.close()
        await anchor.close()
    await wait_for(lambda: "layers" not in node.rooms or not node.rooms["layers"].viewers, 10,
                   "viewer legs closed with the anchor")
    assert video[0].low.closed and not video[0].low.sinks


@pytest.mark.slow
async def test_low_on_a_one_layer_room_gets_its_only_layer(server: Any) -> None:
    anchor = await publish(server.url, "single", server.token("single", "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    node = server.app[NODE_KEY]
    await wait_for(lambda: "single" in node.rooms and node.rooms["single"].live, 10, "live")
    viewer, pictures = await _watch(server, "single", "lo", "low")
    try:
        await wait_for(lambda: len(pictures.seen) >= 20, 15, "20 frames")
        width, height, rgb = pictures.seen[-1]
        assert (width, height) == (640, 360) and reddish(rgb)
    finally:
        await viewer.close()
        await anchor.close()


@pytest.mark.slow
async def test_a_bad_quality_is_400_json_and_leaves_no_session(server: Any) -> None:
    anchor = await _two_layer_anchor(server, "badq")
    node = server.app[NODE_KEY]
    try:
        for bad in ("best", "x" * 300):
            with pytest.raises(SignalingError) as refused:
                await play(server.url, "badq", server.token("badq", "v", "subscribe"),
                           quality=bad)
            assert (refused.value.status, refused.value.code) == (400, "bad_quality")
        assert not node.rooms["badq"].viewers
        async with aiohttp.ClientSession() as http, http.post(
                f"{server.url}/whep/badq?quality=medium", data="v=0\r\n",
                headers={"Authorization": "Bearer " + server.token("badq", "v", "subscribe"),
                         "Content-Type": "application/sdp"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_quality"
        viewer, pictures = await _watch(server, "badq", "ok", "low")  # still serving
        try:
            await wait_for(lambda: len(pictures.seen) >= 10, 15, "10 frames after refusals")
            assert bluish(pictures.seen[-1][2])
        finally:
            await viewer.close()
    finally:
        await anchor.close()


# --- the pages ----------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
async def test_the_anchor_page_sends_a_low_layer_that_a_low_viewer_page_plays(
    server: Any, chromium: Any
) -> None:
    """anchor.html?layers=2 publishes a 320x180 copy of its camera as the second video; a
    viewer page with ?quality=low plays it, one with ?quality=high plays the camera."""
    from test_browser import collect_errors, page_url, wait_frames, wait_state

    errors: list[str] = []
    anchor = await chromium.new_page()
    collect_errors(anchor, "anchor", errors)
    await anchor.goto(page_url(server, "anchor", "pages", server.token("pages", "a", "publish"),
                               autostart="1", layers="2"))
    await wait_state(anchor, "connected")
    video = next(p for p in server.app[NODE_KEY].rooms["pages"].producers() if p.kind == "video")
    assert video.low is not None
    await wait_for(lambda: video.low is not None and video.low.keyframes > 0, 10,
                   "the low layer's first keyframe")
    sizes = {}
    for quality in ("low", "high"):
        page = await chromium.new_page()
        collect_errors(page, quality, errors)
        await page.goto(page_url(server, "viewer", "pages",
                                 server.token("pages", quality, "subscribe"), quality=quality))
        stats = await wait_frames(page, 30)
        sizes[quality] = (stats["frameWidth"], stats["frameHeight"])
    assert sizes["low"][1] <= 180 < sizes["high"][1], sizes
    assert not errors, errors


def test_policy_goes_down_after_two_seconds_of_loss_and_up_after_eight_clean() -> None:
    policy = LayerPolicy()
    high = 600_000
    assert policy.update(0.0, 0.2, None, high) == "high"
    assert policy.update(1.0, 0.2, None, high) == "high"
    assert policy.update(1.5, 0.0, None, high) == "high"  # a clean report restarts the count
    assert policy.update(2.0, 0.2, None, high) == "high"
    assert policy.update(3.9, 0.2, None, high) == "high"
    assert policy.update(4.0, 0.2, None, high) == "low"
    assert policy.update(5.0, 0.0, None, high) == "low"
    assert policy.update(12.9, 0.0, None, high) == "low"
    assert policy.update(13.0, 0.0, None, high) == "high"


def test_policy_counts_packets_resent_on_nacks_as_loss() -> None:
    policy = LayerPolicy()
    high = 600_000
    policy.update(0.0, 0.0, None, high, resent=0.3)  # the browser reports 0 %: NACKs hid it
    assert policy.update(2.0, 0.0, None, high, resent=0.2) == "low"
    policy.update(3.0, 0.0, None, high, resent=0.05)  # still resending 5 %: not clean
    assert policy.update(11.0, 0.0, None, high, resent=0.05) == "low"
    policy.update(12.0, 0.0, None, high)
    assert policy.update(20.0, 0.0, None, high) == "high"


def test_policy_reads_a_remb_well_under_the_high_layer_as_trouble_and_5_percent_as_unclean(
) -> None:
    policy = LayerPolicy()
    high = 600_000
    policy.update(0.0, 0.0, 650_000, high)  # a little above what arrives: fine
    assert policy.update(5.0, 0.0, 650_000, high) == "high"
    policy.update(6.0, 0.0, 400_000, high)  # under 600k / 1.3
    assert policy.update(8.0, 0.0, 400_000, high) == "low"
    policy.update(9.0, 0.0, 200_000, high)  # on low, REMB says nothing about going up
    assert policy.update(16.0, 0.05, 200_000, high) == "low"  # 5 % is not clean
    policy.update(17.0, 0.0, 200_000, high)
    assert policy.update(24.9, 0.0, 200_000, high) == "low"
    assert policy.update(25.0, 0.0, 200_000, high) == "high"
    policy.update(26.0, None, None, high)  # nothing known: no reason to leave
    assert policy.update(40.0, None, None, high) == "high"


def _keep_only_nack_and_pli(viewer: Viewer) -> None:
    """The aiortc viewer stops sending receiver reports and REMB, so the loss a test sets on
    its consumer stands as its reports would say it."""
    for transceiver in viewer.pc.getTransceivers():
        receiver = transceiver.receiver
        send = receiver._send_rtcp

        async def filtered(packet: Any, send: Any = send) -> None:
            if isinstance(packet, RtcpRrPacket) or (
                    isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP):
                return
            await send(packet)

        receiver._send_rtcp = filtered


@pytest.mark.slow
async def test_an_auto_viewer_switches_down_and_up_without_renegotiating(server: Any) -> None:
    """The viewer's reported loss (set here on its consumer, as its receiver reports would) moves
    it to the low layer within 5 s; it decodes on at >= 20 fps, one continuous track; clean
    again, it is back on high within 15 s. A viewer pinned to high in the room stays there."""
    anchor = await _two_layer_anchor(server, "auto")
    node = server.app[NODE_KEY]
    room = node.rooms["auto"]
    (auto, seen), (pinned, pinned_seen) = [await _watch(server, "auto", who, q)
                                           for who, q in (("au", None), ("hi", "high"))]
    try:
        await wait_for(lambda: len(seen.seen) >= 20 and len(pinned_seen.seen) >= 20, 15,
                       "20 frames")
        _keep_only_nack_and_pli(auto)
        leg = next(s for s in room.viewers.values()
                   if isinstance(s, ViewerLeg) and s.identity == "au")
        consumer = next(c for c in leg.consumers if c.producer.kind == "video")
        assert consumer.producer.layer == "high"
        consumer.loss = 0.2
        before = len(seen.seen)
        await wait_for(lambda: consumer.producer.layer == "low", 5, "on low within 5 s")
        on_low = len(seen.seen)
        await wait_for(lambda: len(seen.seen) >= on_low + 40, 3, "40 frames on low in 2 s")
        small = [rgb for w, h, rgb in seen.seen[on_low + 10:] if (w, h) == (320, 180)]
        assert len(small) >= 25 and all(bluish(rgb) for rgb in small)
        assert auto.video is not None
        consumer.loss = 0.0
        await wait_for(lambda: consumer.producer.layer == "high", 15, "back on high in 15 s")
        back = len(seen.seen)
        await wait_for(lambda: len(seen.seen) >= back + 20, 3, "20 frames on high")
        width, height, rgb = seen.seen[-1]
        assert (width, height) == (640, 360) and reddish(rgb)
        assert len(seen.seen) > before
        assert all((w, h) == (640, 360) for w, h, _ in pinned_seen.seen)
        pinned_leg = next(s for s in room.viewers.values()
                          if isinstance(s, ViewerLeg) and s.identity == "hi")
        assert {c.producer.layer for c in pinned_leg.consumers
                if c.producer.kind == "video"} == {"high"}
    finally:
        for viewer in (auto, pinned):
            await viewer.close()
        await anchor.close()


async def test_a_switch_waits_for_the_targets_keyframe_and_continues_the_numbering() -> None:
    """No network: the consumer goes on with the old layer until the new one's keyframe, then
    its sequence numbers follow on by one and its timestamp by one frame; a NACK for a number
    sent before the switch is not answered, one after is, from the new layer, and not twice
    within the resend interval."""
    from test_forwarding_unit import H264, SLICE, SPS, Wire, header, rtp

    high = Producer("video", H264, publisher_id="p", request_keyframe=lambda ssrc: None)
    low = Producer("video", H264, publisher_id="p", request_keyframe=lambda ssrc: None,
                   layer="low")
    high.low = low
    wire = Wire()
    consumer = Consumer(high, 102, "v", wire.protect, wire.send)
    high.attach(consumer)
    high.ingest(rtp(100, SPS, ts=1000, ssrc=1))
    high.ingest(rtp(101, SLICE, ts=4000, ssrc=1))
    consumer.switch_to(low)
    low.ingest(rtp(7000, SLICE, ts=555_000, ssrc=2))  # not a keyframe: nothing from low yet
    high.ingest(rtp(102, SLICE, ts=7000, ssrc=1))  # the old layer goes on meanwhile
    low.ingest(rtp(7001, SPS, ts=558_000, ssrc=2))
    low.ingest(rtp(7002, SLICE, ts=558_000, ssrc=2))
    high.ingest(rtp(103, SLICE, ts=10000, ssrc=1))  # after the switch: not sent
    sent = [header(p)[2:4] for p in wire.sent]
    assert sent == [(100, 1000), (101, 4000), (102, 7000), (103, 10000), (104, 10000)]
    assert consumer.producer is low and consumer not in high.sinks and low.sinks == [consumer]
    wire.sent.clear()
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=low.ssrc)
    nack.lost = [101, 104]
    await consumer.handle_rtcp(nack)
    # 101 was the old layer's: not resent (that link was failing); 104 from the new layer
    assert [header(p)[2:4] for p in wire.sent] == [(104, 10000)]
    await consumer.handle_rtcp(nack)  # asked again at once: not sent twice within 100 ms
    assert len(wire.sent) == 1
    _ntp, rtp_ts = consumer.sender_report()
    assert rtp_ts == (low.sender_report()[1] + 10000 - 558_000) & 0xFFFFFFFF
