"""Recording end to end: a real aiortc WHIP anchor (painted video, a tone), the room's FLV
output remuxed to fragmented MP4 segments, the REST list and the media with HTTP Range, read
back with ffprobe and PyAV."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from conftest import Server, loopback_config
from waiting import wait_for

from loadtest.clients import publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.recording.manager import RECORDING_KEY
from shopcast.config import Config
from signaling.errors import StoreUnavailable
from signaling.recordings_index import RECORDINGS_KEY, RecordingMeta


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return loopback_config(tmp_path, workers=0, record=True,
                           record_dir=str(tmp_path / "recordings"), record_segment_s=2)


async def recordings(server: Server, room: str, token: str = "") -> list[dict[str, Any]]:
    token = token or server.token(room, "viewer", "subscribe")
    async with aiohttp.ClientSession() as http, http.get(
            f"{server.url}/api/v1/rooms/{room}/recordings?token={token}") as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    listed: list[dict[str, Any]] = body["recordings"]
    return listed


async def finished(server: Server, room: str, limit_s: float = 15) -> dict[str, Any]:
    """The room's one recording, once it is finished."""
    deadline = time.monotonic() + limit_s
    while True:
        listed = await recordings(server, room)
        if listed and listed[-1]["finished"]:
            assert len(listed) == 1, listed
            return listed[0]
        assert time.monotonic() < deadline, f"no finished recording: {listed}"
        await asyncio.sleep(0.2)


async def download(server: Server, room: str, recording: dict[str, Any], path: Path) -> Path:
    token = server.token(room, "viewer", "subscribe")
    async with aiohttp.ClientSession() as http, http.get(
            f"{server.url}/api/v1/recordings/{recording['id']}?token={token}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "video/mp4"
        assert response.headers["Accept-Ranges"] == "bytes"
        data = await response.read()
    assert len(data) == recording["bytes"]
    await asyncio.to_thread(path.write_bytes, data)
    return path


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
         "-of", "json", str(path)], capture_output=True, check=True, timeout=30)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def decoded_video_end(path: Path) -> tuple[float, int]:
    """(time of the last decoded picture, pictures): the file decoded to its end with PyAV."""
    last, count = 0.0, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            assert frame.time is not None
            last, count = max(last, frame.time), count + 1
    return last, count


def decoded_end(path: Path) -> tuple[float, int]:
    """(end of the last decoded picture or audio frame, pictures): every stream of the file
    decoded to its end with PyAV."""
    end, pictures = 0.0, 0
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            assert frame.time is not None
            if isinstance(frame, av.AudioFrame):
                end = max(end, frame.time + frame.samples / frame.sample_rate)
            else:
                end, pictures = max(end, frame.time), pictures + 1
    return end, pictures


async def recording_started(server: Server, room: str) -> None:
    manager = server.app[RECORDING_KEY]
    await wait_for(lambda: room in manager.recorders and manager.recorders[room].started,
                   10, "the recording to start")


async def record_a_room(server: Server, room: str, seconds: float) -> dict[str, Any]:
    """A painted aiortc anchor recorded for ``seconds`` once its recording started; the
    finished recording as the list gives it."""
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    try:
        await recording_started(server, room)
        await asyncio.sleep(seconds)
    finally:
        await anchor.close()
    return await finished(server, room)


async def test_a_room_is_recorded_in_segments_and_served_as_one_seekable_mp4(
    server: Server, tmp_path: Path
) -> None:
    room = "rec-short"
    recording = await record_a_room(server, room, 5.5)
    assert recording["room"] == room and abs(recording["started_at"] - time.time()) < 15
    segments = recording["segments"]
    assert len(segments) >= 2, segments  # cut every 2 s at a keyframe (FLV asks one per 2 s)
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert segments[0]["start_s"] == 0
    for before, after in itertools.pairwise(segments):
        assert after["start_s"] - before["start_s"] >= 2
        assert abs(before["start_s"] + before["duration_s"] - after["start_s"]) < 0.01

    whole = await download(server, room, recording, tmp_path / "whole.mp4")
    info = probe(whole)
    assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert abs(float(info["format"]["duration"]) - recording["duration_s"]) < 0.5, info
    end, pictures = decoded_video_end(whole)
    assert end > recording["duration_s"] - 1, (end, recording["duration_s"])  # audio may end later
    assert pictures >= end * 10, (pictures, end)

    folder = server.app[RECORDINGS_KEY].path_of(recording["id"])
    for segment in segments:  # every segment file plays alone, on the recording's clock
        path = folder / f"{segment['index']:05d}.mp4"
        assert path.stat().st_size == segment["bytes"]
        with av.open(str(path)) as container:
            first = next(container.decode(video=0))
        assert first.time is not None and abs(first.time - segment["start_s"]) < 0.1

    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        metrics = await response.text()
    assert 'shopcast_recordings_ended_total{reason="publisher_left"} 1' in metrics
    assert "shopcast_recordings_active 0" in metrics
    written = next(line for line in metrics.splitlines()
                   if line.startswith("shopcast_recording_bytes_total "))
    assert int(written.split()[1]) == recording["bytes"]

    token = server.token(room, "viewer", "subscribe")
    url = f"{server.url}/api/v1/recordings/{recording['id']}"
    total = recording["bytes"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        async with http.get(url, headers={"Range": "bytes=100-199"}) as response:
            assert response.status == 206
            assert response.headers["Content-Range"] == f"bytes 100-199/{total}"
            assert await response.read() == whole.read_bytes()[100:200]
        async with http.get(url, headers={"Range": f"bytes={total - 10}-"}) as response:
            assert response.status == 206 and await response.read() == whole.read_bytes()[-10:]
        async with http.get(url, headers={"Range": f"bytes={total}-"}) as response:
            assert response.status == 416
            assert response.headers["Content-Range"] == f"bytes */{total}"
            assert (await response.json())["error"]["code"] == "range_not_satisfiable"


def test_meta_round_trips_through_json() -> None:
    meta = RecordingMeta("R_0123456789abcdef", "room", "node", 1.5, finished=True)
    assert RecordingMeta.loads(meta.dumps()) == meta


async def test_a_rooms_own_choice_wins_over_record(server: Server) -> None:
    room = "rec-off"
    async with aiohttp.ClientSession() as http, http.put(
            f"{server.url}/api/v1/rooms/{room}/recording", json={"enabled": False},
            headers={"Authorization": f"Bearer {server.token(room, 'boss', 'admin')}"}
    ) as response:
        assert response.status == 200
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    try:
        outputs = server.app[RECORDING_KEY].flv.outputs
        await wait_for(lambda: room in outputs and outputs[room].live, 10, "the room live")
        await asyncio.sleep(2)
        assert room not in server.app[RECORDING_KEY].recorders  # --record is on here
        assert await recordings(server, room) == []
    finally:
        await anchor.close()


async def test_a_store_that_fails_for_a_while_does_not_end_the_recording(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = server.app[RECORDINGS_KEY]
    real_put = index.put
    failing = True

    async def put(meta: RecordingMeta) -> None:
        if failing:
            raise StoreUnavailable()
        await real_put(meta)

    monkeypatch.setattr(index, "put", put)
    room = "rec-outage"
    anchor = await publish(server.url, room, server.token(room, "anchor", "publish"),
                           PaintedVideoTrack(colour="red"), ToneAudioTrack())
    try:
        await recording_started(server, room)
        await asyncio.sleep(3)  # every index write fails meanwhile
        assert room in server.app[RECORDING_KEY].recorders
        failing = False
        await asyncio.sleep(2)
    finally:
        await anchor.close()
    recording = await finished(server, room)  # one recording through the outage
    manager = server.app[RECORDING_KEY]
    assert recording["duration_s"] >= 4, (recording, manager.lines()[-3:])
