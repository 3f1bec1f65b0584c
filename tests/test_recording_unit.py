"""The recorder alone, fed FLV tags made by ffmpeg through a tag log the way a room's output
feeds it (no network): a new SPS/PPS with a new picture size mid-recording stays in the same
recording (avc3, parameter sets in-band), a new AAC configuration ends it for the next one,
and a recorder whose room never sent a keyframe leaves nothing."""

from __future__ import annotations

import asyncio
import subprocess
import types
from pathlib import Path
from typing import Any

import av

from sfu.flv.gop_cache import Entry, TagLog
from sfu.flv.muxer import Tag, retime, split_tags
from sfu.recording.recorder import RoomRecorder
from signaling.recordings_index import RecordingMeta, new_recording_id


def flv(size: str, rate: int, seconds: float) -> tuple[bytes, list[Tag]]:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size={size}:rate=25",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={rate}", "-t", str(seconds),
         "-c:v", "libx264", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-f", "flv", "-"], capture_output=True, check=True, timeout=60)
    return split_tags(out.stdout)


def media(tags: list[Tag]) -> list[Tag]:
    """Tags but the sequence headers and the end-of-sequence tag."""
    return [t for t in tags if not t.sequence_header and not (t.kind == 9 and t.data[12] == 2)]


def headers(tags: list[Tag]) -> dict[int, Tag]:
    return {t.kind: t for t in tags if t.sequence_header}


class Room:
    """What a recorder reads from a room's output: its tag log, whether it closed."""

    def __init__(self, header: bytes) -> None:
        self.log = TagLog(keep_ms=100_000)
        self.log.header = header
        self.output: Any = types.SimpleNamespace(log=self.log, closed=False,
                                                 request_keyframe=lambda: None)

    def feed(self, recorder: RoomRecorder, tags: list[Tag], offset_ms: int = 0,
             glue: dict[int, Tag] | None = None) -> None:
        """Append ``tags`` shifted by ``offset_ms``; ``glue``'s headers go before the first
        tag of their kind (as the output glues a new configuration)."""
        glue = dict(glue or {})
        for tag in tags:
            data = retime(tag, tag.timestamp + offset_ms).data
            if tag.kind in glue:
                data = retime(glue.pop(tag.kind), tag.timestamp + offset_ms).data + data
            self.log.append(Entry(data, tag.timestamp + offset_ms, tag.keyframe))
            recorder.poll()
            if recorder.ended:
                return


def recorder(room: Room, tmp_path: Path) -> RoomRecorder:
    meta = RecordingMeta(new_recording_id(), "unit", "node", 0.0)
    made = RoomRecorder(meta, room.output, tmp_path / meta.id, segment_s=600)
    made.start()
    return made


def sizes(path: Path) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if not seen or seen[-1] != (frame.width, frame.height):
                seen.append((frame.width, frame.height))
    return seen


def one_stream_then_another(tmp_path: Path, size: str, rate: int) -> RoomRecorder:
    """3 s of 320x240 with 48 kHz AAC, then 3 s of ``size`` with ``rate`` Hz AAC, its new
    sequence headers glued in line (the co-host mix's switch, an encoder's new settings)."""
    first_header, first = flv("320x240", 48000, 3)
    _, second = flv(size, rate, 3)
    room = Room(first_header + b"".join(t.data for t in headers(first).values()))
    rec = recorder(room, tmp_path)
    room.feed(rec, media(first))
    end = max(t.timestamp for t in first) + 40
    room.feed(rec, media(second), end, glue=headers(second))
    return rec


async def test_a_new_picture_size_stays_in_the_same_recording(tmp_path: Path) -> None:
    rec = one_stream_then_another(tmp_path, "640x360", 48000)
    assert rec.ended == ""
    meta = rec.finish()
    await rec.written()
    assert meta is not None and 5.5 <= meta.duration_s <= 6.5, meta
    path = tmp_path / meta.id / "00000.mp4"
    assert sizes(path) == [(320, 240), (640, 360)]


async def test_a_new_aac_configuration_ends_the_recording(tmp_path: Path) -> None:
    rec = one_stream_then_another(tmp_path, "320x240", 44100)
    assert rec.ended == "restart"
    meta = rec.finish()
    await rec.written()
    assert meta is not None and meta.finished and 2.5 <= meta.duration_s <= 3.5, meta
    with av.open(str(tmp_path / meta.id / "00000.mp4")) as container:
        assert container.streams.audio[0].sample_rate == 48000


def test_nothing_is_kept_without_a_keyframe(tmp_path: Path) -> None:
    header, tags = flv("320x240", 48000, 1)
    room = Room(header + b"".join(t.data for t in headers(tags).values()))
    rec = recorder(room, tmp_path)
    room.feed(rec, [t for t in media(tags) if not t.keyframe])
    assert not rec.started and rec.finish() is None


async def test_a_disk_that_fails_ends_the_recording(tmp_path: Path) -> None:
    header, tags = flv("320x240", 48000, 3)
    room = Room(header + b"".join(t.data for t in headers(tags).values()))
    (tmp_path / "a-file").write_bytes(b"")  # the record dir cannot be made below a file
    meta = RecordingMeta(new_recording_id(), "unit", "node", 0.0)
    rec = RoomRecorder(meta, room.output, tmp_path / "a-file" / meta.id, segment_s=600)
    rec.start()
    for _ in range(100):  # bounded: the writer's thread reports within a few tags
        room.feed(rec, media(tags)[:10])
        if rec.ended:
            break
        await asyncio.sleep(0.01)
    assert rec.ended == "disk_error", rec.ended
    rec.finish()
    await asyncio.wait_for(rec.written(), 5)
