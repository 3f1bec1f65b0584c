"""Co-hosts: a second publisher joins a live room on slot 1; anchor and co-host each see the
other, viewers already watching see both without renegotiating, FLV keeps the anchor, and the
co-host leaving leaves the anchor's stream playing. In one process and with worker processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import SignalingError, _negotiate, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack, dominant_colour
from sfu.node import NODE_KEY
from shopcast.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture(params=[0, 2], ids=["one-process", "two-workers"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """Every test here runs with viewers in one process and in two worker processes."""
    return loopback_config(tmp_path, workers=request.param)



class SlotViewer:
    """A WHEP viewer offering two video and two audio sections (two publisher slots), decoding
    each video section and recording the colour it shows."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.colours: dict[int, list[tuple[int, int, int]]] = {0: [], 1: []}
        self.tasks: list[asyncio.Task[None]] = []
        self.videos = [self.pc.addTransceiver("video", direction="recvonly") for _ in range(2)]
        for _ in range(2):
            self.pc.addTransceiver("audio", direction="recvonly")

    async def start(self, url: str, room: str, token: str) -> None:
        await _negotiate(self.pc, f"{url}/whep/{room}", token, None)
        for slot, transceiver in enumerate(self.videos):
            self.tasks.append(asyncio.create_task(self._read(slot, transceiver.receiver.track)))

    async def _read(self, slot: int, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                self.colours[slot].append(dominant_colour(frame))
        except MediaStreamError:
            pass

    def sees(self, slot: int, colour: str, frames: int = 20) -> bool:
        recent = self.colours[slot][-frames:]
        if len(recent) < frames:
            return False
        red, _green, blue = recent[-1]
        return red > 150 and blue < 100 if colour == "red" else blue > 150 and red < 100

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


async def invite(server: Any, room: str, identity: str) -> None:
    """The anchor's invitation over REST (a co-host without one is refused)."""
    async with aiohttp.ClientSession() as http, http.post(
        f"{server.url}/api/v1/rooms/{room}/cohosts", json={"identity": identity},
        headers={"Authorization": f"Bearer {server.token(room, 'anchor', 'publish')}"},
    ) as response:
        assert response.status == 201, await response.text()


async def start_publisher(server: Any, room: str, identity: str, colour: str, *grants: str
                          ) -> Any:
    return await publish(
        server.url, room, server.token(room, identity, *grants),
        PaintedVideoTrack(colour=colour), ToneAudioTrack(),
    )


async def test_anchor_and_cohost_see_each_other_and_viewers_see_both(server: Any) -> None:
    node = server.app[NODE_KEY]
    anchor = await start_publisher(server, "duo", "anchor", "red", "publish")
    await wait_for(lambda: "duo" in node.rooms and node.rooms["duo"].live, 10, "anchor live")
    viewers = [SlotViewer() for _ in range(3)]
    for i, viewer in enumerate(viewers):  # watching before the co-host arrives
        await viewer.start(server.url, "duo", server.token("duo", f"v{i}", "subscribe"))
    cohost = anchor_view = cohost_view = None
    try:
        await wait_for(lambda: all(v.sees(0, "red") for v in viewers), 15, "viewers see anchor")
        async with aiohttp.ClientSession() as http:  # a plain publisher is still refused
            offer_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            offer_pc.addTransceiver("video", direction="sendonly")
            await offer_pc.setLocalDescription(await offer_pc.createOffer())
            async with http.post(
                f"{server.url}/whip/duo", data=offer_pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp", "Authorization":
                         f"Bearer {server.token('duo', 'intruder', 'publish')}"},
            ) as response:
                assert response.status == 409
                assert (await response.json())["error"]["code"] == "publisher_exists"
            await offer_pc.close()

        with pytest.raises(SignalingError) as refused:  # not invited yet
            await start_publisher(server, "duo", "guest", "blue", "cohost")
        assert (refused.value.status, refused.value.code) == (403, "not_invited")
        await invite(server, "duo", "guest")
        cohost = await start_publisher(server, "duo", "guest", "blue", "cohost")
        await wait_for(lambda: len(node.rooms["duo"].producers()) == 4, 10, "co-host live")
        anchor_view, cohost_view = SlotViewer(), SlotViewer()
        await anchor_view.start(server.url, "duo", server.token("duo", "anchor", "subscribe"))
        await cohost_view.start(server.url, "duo", server.token("duo", "guest", "subscribe"))
        await wait_for(lambda: anchor_view.sees(1, "blue"), 15, "anchor sees the co-host")
        await wait_for(lambda: cohost_view.sees(0, "red"), 15, "co-host sees the anchor")
        assert not anchor_view.colours[0] and not cohost_view.colours[1], "own tracks echoed"

        await wait_for(
            lambda: all(v.sees(0, "red") and v.sees(1, "blue") for v in viewers), 15,
            "viewers see both",
        )

        await cohost.close()
        await wait_for(lambda: len(node.rooms["duo"].producers()) == 2, 10, "co-host gone")
        before = [len(v.colours[0]) for v in viewers]
        await asyncio.sleep(1.5)
        for viewer, count in zip(viewers, before, strict=True):
            assert len(viewer.colours[0]) - count >= 20, "the anchor keeps playing"
            assert viewer.sees(0, "red")
    finally:
        for view in [*viewers, anchor_view, cohost_view]:
            if view is not None:
                await view.close()
        if cohost is not None:
            await cohost.close()
        await anchor.close()
