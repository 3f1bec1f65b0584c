"""The FLV file header announces only the tracks the room really carries: a video-only anchor's
stream does not promise audio, so players (libavformat, mpegts.js) do not wait for it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiortc import MediaStreamTrack
from flv_helpers import ffprobe
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.flv.manager import FLV_KEY

pytestmark = pytest.mark.slow


async def first_bytes(server: Any, room: str) -> bytes:
    async with aiohttp.ClientSession() as http, http.get(server.flv_url(room)) as response:
        return await response.content.readexactly(13)


async def test_a_video_only_whip_anchor_announces_no_audio(server: Any) -> None:
    anchor = await publish(server.url, "vonly", server.token("vonly", "anchor", "publish"),
                           PaintedVideoTrack(), None)
    outputs = server.app[FLV_KEY].outputs
    try:
        await wait_for(lambda: "vonly" in outputs and outputs["vonly"].live, 10, "FLV live")
        head = await first_bytes(server, "vonly")
        assert head[:3] == b"FLV" and head[4] == 0x01, f"flags {head[4]:#x}: video only"
        started = time.monotonic()
        probe = await asyncio.to_thread(ffprobe, server.flv_url("vonly", "probe"))
        assert time.monotonic() - started < 3, "libavformat did not wait for audio"
        assert [s["codec_type"] for s in probe["streams"]] == ["video"]
    finally:
        await anchor.close()


async def test_an_anchor_with_audio_announces_both(server: Any) -> None:
    anchor = await publish(server.url, "both", server.token("both", "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    outputs = server.app[FLV_KEY].outputs
    try:
        await wait_for(lambda: "both" in outputs and outputs["both"].live, 10, "FLV live")
        # only audio that has come is announced, and the first AAC (made on the codec thread)
        # may come after the first video keyframe: a reader joining once it has gets both
        deadline = time.monotonic() + 10
        head = await first_bytes(server, "both")
        while head[4] != 0x05 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            head = await first_bytes(server, "both")
        assert head[4] == 0x05, f"flags {head[4]:#x}: audio and video"
    finally:
        await anchor.close()


class SilentAudio(MediaStreamTrack):
    """An audio track that never yields: the offer has audio, no audio packet ever comes."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def test_an_anchor_whose_audio_never_comes_announces_video_only(server: Any) -> None:
    anchor = await publish(server.url, "mute", server.token("mute", "anchor", "publish"),
                           PaintedVideoTrack(), SilentAudio())
    outputs = server.app[FLV_KEY].outputs
    try:
        await wait_for(lambda: "mute" in outputs and outputs["mute"].live, 10, "FLV live")
        head = await first_bytes(server, "mute")
        assert head[4] == 0x01, f"flags {head[4]:#x}: no audio has come, none is announced"
        started = time.monotonic()
        await asyncio.to_thread(ffprobe, server.flv_url("mute", "probe"))
        assert time.monotonic() - started < 3, "libavformat did not wait for audio"
    finally:
        await anchor.close()
