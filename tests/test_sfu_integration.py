"""Real aiortc peers through the SFU on loopback: content, late join, NACK, teardown, and
proof that the forwarding path runs no encoder or decoder."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest
from aiortc import rtcrtpreceiver, rtcrtpsender
from aiortc.rtp import RtcpSrPacket
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack, dominant_colour, read_painted
from sfu.node import NODE_KEY
from sfu.viewer import Viewer
from signaling.rooms import VIEWERS_INTERVAL_S

pytestmark = pytest.mark.slow



async def start_anchor(server: Any, room: str, colour: str = "red") -> Any:
    """Publish a painted anchor and wait until the SFU has it live (viewers 404 before)."""
    anchor = await publish(
        server.url, room, server.token(room, "anchor", "publish"),
        PaintedVideoTrack(colour=colour), ToneAudioTrack(),
    )
    node = server.app[NODE_KEY]
    await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "anchor live")
    return anchor


async def test_three_viewers_decode_the_anchors_painted_frames(server: Any) -> None:
    anchor = await start_anchor(server, "live1", colour="red")
    seen: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    colours: dict[int, list[tuple[int, int, int]]] = {0: [], 1: [], 2: []}

    def recorder(i: int) -> Any:
        def on_frame(frame: Any) -> None:
            painted = read_painted(frame)
            if painted is not None:
                seen[i].append(painted)
                colours[i].append(dominant_colour(frame))
        return on_frame

    viewers = [
        await play(server.url, "live1", server.token("live1", f"v{i}", "subscribe"),
                   on_frame=recorder(i))
        for i in range(3)
    ]
    try:
        await wait_for(lambda: all(len(s) >= 45 for s in seen.values()), 15, "45 frames each")
        for i in range(3):
            frame_numbers = [n for _, n in seen[i]]
            assert frame_numbers == sorted(frame_numbers), "frames arrive in order"
            assert frame_numbers[-1] - frame_numbers[0] >= 44, "the pattern moves"
            red, green, blue = colours[i][-1]
            assert red > 150 and green < 100 and blue < 100, f"viewer {i}: {colours[i][-1]}"
        # every viewer got the same pictures: painted frame numbers overlap
        common = set.intersection(*(set(n for _, n in s) for s in seen.values()))
        assert len(common) >= 30
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


async def test_a_late_viewer_decodes_within_one_second(server: Any) -> None:
    anchor = await start_anchor(server, "late")
    try:
        await asyncio.sleep(3)  # well past the anchor's first keyframe
        started = time.monotonic()
        viewer = await play(server.url, "late", server.token("late", "v", "subscribe"))
        await wait_for(lambda: viewer.frames > 0, 5, "first frame")
        first_frame_s = viewer.first_frame_at - started
        assert first_frame_s < 1.0, f"first frame after {first_frame_s:.3f}s"
        await viewer.close()
    finally:
        await anchor.close()


async def test_a_viewer_joining_after_another_starts_from_the_cached_keyframe(
    server: Any,
) -> None:
    """The second viewer decodes the keyframe the first one asked for, every frame after it
    in order, and is then live: its latency settles as low as the first viewer's."""
    anchor = await start_anchor(server, "fast")
    node = server.app[NODE_KEY]
    first = second = None
    try:
        first = await play(server.url, "fast", server.token("fast", "v1", "subscribe"))
        await wait_for(lambda: first.painted > 0, 5, "first viewer's first frame")
        video = next(p for p in node.rooms["fast"].producers() if p.kind == "video")
        asked, fast_starts = video.keyframe_requests, video.fast_starts
        second = await play(server.url, "fast", server.token("fast", "v2", "subscribe"))
        await wait_for(lambda: second.painted >= 60, 10, "60 frames at the second viewer")
        assert video.fast_starts == fast_starts + 1
        assert video.keyframe_requests <= asked + 1
        assert second.frame_gaps == 0, "every frame after the cached keyframe decoded"
        late = sorted(second.latencies_ms[-30:])
        assert late[len(late) // 2] < 150, f"the second viewer caught up: {late}"
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            metrics = await resp.text()
        line = next(ln for ln in metrics.splitlines()
                    if ln.startswith("shopcast_track_fast_starts_total") and 'kind="video"' in ln
                    and 'room="fast"' in ln)
        assert int(line.rsplit(" ", 1)[1]) == video.fast_starts
    finally:
        for viewer in (first, second):
            if viewer is not None:
                await viewer.close()
        await anchor.close()


async def test_a_viewer_that_loses_packets_gets_them_back_through_nack(server: Any) -> None:
    anchor = await start_anchor(server, "lossy")
    viewer = await play(server.url, "lossy", server.token("lossy", "v", "subscribe"), decode=True)
    dropped: set[int] = set()
    node = server.app[NODE_KEY]
    video_ssrc = next(p.ssrc for p in node.rooms["lossy"].producers() if p.kind == "video")
    ice = viewer.pc.getTransceivers()[0].receiver.transport.transport
    original = ice._recv

    async def lossy_recv() -> bytes:
        """Lose every 7th video packet once, on the wire (before SRTP, as real loss is), so
        the SRTP replay window accepts the retransmission."""
        while True:
            data: bytes = await original()
            if 127 < data[0] < 192 and not 192 <= data[1] <= 223:  # RTP, not RTCP
                seq = int.from_bytes(data[2:4], "big")
                ssrc = int.from_bytes(data[8:12], "big")
                if ssrc == video_ssrc and seq % 7 == 0 and seq not in dropped:
                    dropped.add(seq)
                    continue
            return data

    ice._recv = lossy_recv
    try:
        await wait_for(lambda: len(dropped) >= 20 and viewer.frames >= 60, 20, "loss and frames")
        server_viewer = next(leg for leg in node.sessions.values() if isinstance(leg, Viewer))
        retransmits = sum(c.retransmits for c in server_viewer.consumers)
        assert retransmits >= len(dropped) * 0.8, (retransmits, len(dropped))
        before = viewer.frames
        await asyncio.sleep(1.0)
        assert viewer.frames - before >= 20, "video keeps playing through the loss"
    finally:
        await viewer.close()
        await anchor.close()


async def test_five_viewers_make_no_encoder_or_decoder_on_the_server(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: dict[str, int] = {"encoders": 0, "decoders": 0}
    real_encoder, real_decoder = rtcrtpsender.get_encoder, rtcrtpreceiver.get_decoder

    def counting_encoder(codec: Any) -> Any:
        created["encoders"] += 1
        return real_encoder(codec)

    def counting_decoder(codec: Any) -> Any:
        created["decoders"] += 1
        return real_decoder(codec)

    monkeypatch.setattr(rtcrtpsender, "get_encoder", counting_encoder)
    monkeypatch.setattr(rtcrtpreceiver, "get_decoder", counting_decoder)
    anchor = await start_anchor(server, "nocodec")
    await asyncio.sleep(1.0)  # the anchor's own encoders exist by now
    before = dict(created)
    viewers = [
        await play(server.url, "nocodec", server.token("nocodec", f"v{i}", "subscribe"),
                   decode=False)
        for i in range(5)
    ]
    try:
        await wait_for(lambda: all(v.packets >= 200 for v in viewers), 15, "packets at viewers")
        # five viewers added no encoder (only the anchor client encodes) and nobody decodes
        assert created == before
        assert created["decoders"] == 0
        node = server.app[NODE_KEY]
        for leg in node.sessions.values():
            if isinstance(leg, Viewer):
                for transceiver in leg.pc.getTransceivers():
                    assert transceiver.sender._RTCRtpSender__encoder is None
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()


async def test_anchor_leaving_ends_viewer_sessions_and_frees_everything(server: Any) -> None:
    tasks_before = {t for t in asyncio.all_tasks() if not t.done()}
    anchor = await start_anchor(server, "bye")
    viewers = [
        await play(server.url, "bye", server.token("bye", f"v{i}", "subscribe"), decode=False)
        for i in range(2)
    ]
    await wait_for(lambda: all(v.packets > 50 for v in viewers), 10, "media flowing")
    await anchor.close()  # WHIP DELETE
    node = server.app[NODE_KEY]
    await wait_for(lambda: not node.sessions and not node.rooms, 5, "server legs and rooms freed")
    await wait_for(
        lambda: all(v.pc.connectionState in ("closed", "failed") for v in viewers), 45,
        "viewers told the session ended",
    )
    for viewer in viewers:
        await viewer.close()

    def leftover() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if not t.done()} - tasks_before - {
            asyncio.current_task()}  # type: ignore[operator]

    # the audience count goes out at most once a second: its timer may still be pending
    with contextlib.suppress(AssertionError):  # the assert below names what is left
        await wait_for(lambda: not leftover(), VIEWERS_INTERVAL_S + 2, "every task ended")
    assert not leftover(), f"tasks left behind: {leftover()}"


async def test_viewer_sender_reports_repeat_the_publishers_mapping(server: Any) -> None:
    """A/V sync: each viewer SR carries an (NTP, RTP) pair the publisher itself reported."""
    sent: dict[str, set[tuple[int, int]]] = {"audio": set(), "video": set()}
    anchor = await start_anchor(server, "sync")
    for sender in anchor.pc.getSenders():
        original_send = sender._send_rtcp

        async def recording_send(packets: list[Any], kind: str = sender.kind,
                                 original: Any = original_send) -> None:
            for packet in packets:
                if isinstance(packet, RtcpSrPacket):
                    info = packet.sender_info
                    sent[kind].add((info.ntp_timestamp, info.rtp_timestamp))
            await original(packets)

        sender._send_rtcp = recording_send
    viewer = await play(server.url, "sync", server.token("sync", "v", "subscribe"), decode=False)
    received: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
    for transceiver in viewer.pc.getTransceivers():
        receiver, kind = transceiver.receiver, transceiver.kind
        original_rtcp = receiver._handle_rtcp_packet

        async def recording_rtcp(packet: Any, kind: str = kind, original: Any = original_rtcp
                                 ) -> None:
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                received[kind].append((info.ntp_timestamp, info.rtp_timestamp))
            await original(packet)

        receiver._handle_rtcp_packet = recording_rtcp
    try:
        await wait_for(lambda: all(len(r) >= 4 for r in received.values()), 15, "viewer SRs")
        for kind in ("audio", "video"):
            matching = [pair for pair in received[kind] if pair in sent[kind]]
            assert len(matching) >= 2, (kind, received[kind][-3:], sorted(sent[kind])[-3:])
            assert received[kind][-1] in sent[kind]
    finally:
        await viewer.close()
        await anchor.close()


async def test_ice_failure_ends_the_session(server: Any) -> None:
    """A viewer that vanishes without a DELETE (no DTLS close, no STUN answers) is dropped when
    ICE consent expires (RFC 7675: about 30 s)."""
    anchor = await start_anchor(server, "gone")
    viewer = await play(server.url, "gone", server.token("gone", "v", "subscribe"), decode=False)
    node = server.app[NODE_KEY]
    try:
        await wait_for(lambda: viewer.packets > 50, 10, "media flowing")
        assert len(node.rooms["gone"].viewers) == 1
        connection = viewer.pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.transport.close()  # the viewer's network is gone
        await wait_for(lambda: not node.rooms["gone"].viewers, 45, "server drops the viewer")
        assert all(leg.role == "publisher" for leg in node.sessions.values())
    finally:
        await viewer.close()
        await anchor.close()
