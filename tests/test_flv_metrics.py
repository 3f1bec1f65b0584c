"""HTTP-FLV figures in /metrics: readers now and in total, closes by reason, GOP age, tags."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import pytest

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.flv.manager import FLV_KEY, FlvManager
from sfu.flv.metrics import render

pytestmark = pytest.mark.slow


def test_no_rooms_still_declares_every_metric() -> None:
    lines = render(FlvManager())
    assert "# TYPE shopcast_flv_readers gauge" in lines
    assert "# TYPE shopcast_flv_reader_skips_total counter" in lines
    assert not [line for line in lines if not line.startswith("#")]


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    assert match, f"no {name}{{{want}}} in /metrics"
    return float(match.group(1))


async def test_metrics_count_flv_readers(server: Any) -> None:
    room = "fm1"
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(), ToneAudioTrack())
    try:
        outputs = server.app[FLV_KEY].outputs
        deadline = time.monotonic() + 10
        while not (room in outputs and outputs[room].live):
            assert time.monotonic() < deadline, "FLV output never went live"
            await asyncio.sleep(0.05)
        url = server.flv_url(room, "v")
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as flv:
                assert flv.status == 200
                await flv.content.readexactly(64 * 1024)
                async with http.get(f"{server.url}/metrics") as resp:
                    text = await resp.text()
            await asyncio.sleep(0.3)  # the server sees the reader go
            async with http.get(f"{server.url}/metrics") as resp:
                after = await resp.text()
        assert sample(text, "shopcast_flv_live", room=room) == 1
        assert sample(text, "shopcast_flv_readers", room=room) == 1
        assert sample(text, "shopcast_flv_readers_total", room=room) == 1
        assert sample(text, "shopcast_flv_bytes_sent_total", room=room) >= 64 * 1024
        assert sample(text, "shopcast_flv_tags_total", room=room) > 0
        assert sample(text, "shopcast_flv_keyframes_total", room=room) >= 1
        assert sample(text, "shopcast_flv_gop_age_ms", room=room) >= 0
        assert sample(after, "shopcast_flv_readers", room=room) == 0
        assert sample(after, "shopcast_flv_readers_total", room=room) == 1
        assert sample(after, "shopcast_flv_readers_closed_total", room=room,
                      reason="disconnected") == 1
        assert "# TYPE shopcast_flv_reader_skips_total counter" in after
    finally:
        await anchor.close()
