"""The recordings index: which recordings exist, for which room, made by which node, and
whether a room is to be recorded. Kept in the store (both backends), so the REST list works
from any process and a room that goes live later on any node follows its flag.

A recording is a directory ``<record dir>/<id>/`` of fragmented MP4 segments
``00000.mp4``, ``00001.mp4``, ...; every segment starts with the same initialization
(``ftyp`` + ``moov``, ``init_bytes`` long) so each file plays alone, and the recording as one
byte stream (what ``GET /api/v1/recordings/{id}`` serves) is segment 0 whole followed by every
later segment without its first ``init_bytes``: one initialization, then every fragment in
order on one clock (``byte_parts``). The store keeps no paths: ids are checked against
``RECORDING_ID`` before any file is touched.

Keys live in the scope ``_recordings``, which no room name can be (room names start with a
letter or digit), so closing a room never drops them.
"""

from __future__ import annotations

import builtins
import json
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from signaling.store import Store

SCOPE = "_recordings"
META = "meta"  # hash: recording id -> JSON
ENABLED = "enabled"  # hash: room -> b"1" / b"0" (absent: the --record default)
TIMELINES = "timeline"  # hash: id -> its product timeline, put aside when its room closed
TOPIC = "recordings"  # bus topic: {"op": "set", "room", "enabled"} for the node with the room
ABANDONED_S = 15.0  # a recorder writes its meta every 2 s while it records
RECORDING_ID = re.compile(r"^R_[0-9a-f]{16}$")
SEGMENT_NAME = "{:05d}.mp4"


def new_recording_id() -> str:
    return "R_" + uuid.uuid4().hex[:16]


def valid_recording_id(value: str) -> bool:
    return bool(RECORDING_ID.match(value))


def _room_key(room: str) -> str:
    return "room:" + room


@dataclass
class Segment:
    """One file of a recording: media time ``start_s`` on the recording's clock."""

    index: int
    start_s: float
    duration_s: float = 0.0
    bytes: int = 0


@dataclass
class RecordingMeta:
    """What the index keeps per recording; ``public()`` is the REST and webhook object."""

    id: str
    room: str
    node: str
    started_at: float  # unix time of media time 0: recording time t is started_at + t
    duration_s: float = 0.0
    bytes: int = 0  # of the whole byte stream served by GET /api/v1/recordings/{id}
    segments: list[Segment] = field(default_factory=list)
    finished: bool = False
    init_bytes: int = 0  # ftyp + moov at the head of every segment file
    updated_at: float = 0.0  # unix time of the recorder's last write to the index

    def abandoned(self, now: float) -> bool:
        """Not finished, and its recorder stopped telling the index (its process was killed):
        the files are what there is, it may be deleted."""
        return not self.finished and now - self.updated_at > ABANDONED_S

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id, "room": self.room, "started_at": round(self.started_at, 3),
            "duration_s": round(self.duration_s, 3), "bytes": self.bytes,
            "segments": [
                {"index": s.index, "start_s": round(s.start_s, 3),
                 "duration_s": round(s.duration_s, 3), "bytes": s.bytes}
                for s in self.segments
            ],
            "finished": self.finished,
        }

    def dumps(self) -> builtins.bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: builtins.bytes) -> RecordingMeta:
        data = json.loads(raw)
        segments = [Segment(**s) for s in data.pop("segments", [])]
        return cls(segments=segments, **data)


async def recordings_of(store: Store, room: str) -> list[RecordingMeta]:
    """The room's recordings in the store, oldest first (what needs no record directory)."""
    ids = await store.hgetall(SCOPE, _room_key(room))
    found = [RecordingMeta.loads(raw) for raw in [await store.hget(SCOPE, META, i) for i in ids]
             if raw is not None]
    return sorted(found, key=lambda m: (m.started_at, m.id))


class RecordingsIndex:
    """The store's recordings (both backends) and the record directory's layout."""

    def __init__(self, store: Store, directory: Path) -> None:
        self.store = store
        self.directory = directory

    # --- the index --------------------------------------------------------------------------

    async def put(self, meta: RecordingMeta) -> None:
        meta.updated_at = time.time()
        await self.store.hset(SCOPE, META, meta.id, meta.dumps())
        await self.store.hset(SCOPE, _room_key(meta.room), meta.id, b"1")

    async def get(self, recording_id: str) -> RecordingMeta | None:
        if not valid_recording_id(recording_id):
            return None
        raw = await self.store.hget(SCOPE, META, recording_id)
        return RecordingMeta.loads(raw) if raw is not None else None

    async def of_room(self, room: str) -> list[RecordingMeta]:
        """The room's recordings, oldest first."""
        return await recordings_of(self.store, room)

    async def every(self) -> list[RecordingMeta]:
        """Every recording (the retention sweep)."""
        raw = await self.store.hgetall(SCOPE, META)
        return [RecordingMeta.loads(value) for value in raw.values()]

    async def remove(self, meta: RecordingMeta) -> bool:
        """Forget ``meta`` in the index and delete its files here; False if already gone."""
        gone = await self.store.hdel(SCOPE, META, meta.id)
        await self.store.hdel(SCOPE, _room_key(meta.room), meta.id)
        await self.store.hdel(SCOPE, TIMELINES, meta.id)
        self.delete_files(meta.id)
        return gone

    # --- which rooms are recorded -----------------------------------------------------------

    async def set_enabled(self, room: str, enabled: bool) -> None:
        await self.store.hset(SCOPE, ENABLED, room, b"1" if enabled else b"0")

    async def enabled(self, room: str) -> bool | None:
        """The room's own choice, None when it never made one (the ``--record`` default)."""
        raw = await self.store.hget(SCOPE, ENABLED, room)
        return None if raw is None else raw == b"1"

    # --- files ------------------------------------------------------------------------------

    def path_of(self, recording_id: str) -> Path:
        if not valid_recording_id(recording_id):
            raise ValueError(f"not a recording id: {recording_id!r}")
        return self.directory / recording_id

    def byte_parts(self, meta: RecordingMeta) -> list[tuple[Path, int, int]]:
        """(file, offset, length) of each piece of the recording's byte stream, from the
        files as they are now (the last segment may still grow); [] when they are not here."""
        parts: list[tuple[Path, int, int]] = []
        folder = self.path_of(meta.id)
        for segment in meta.segments:
            path = folder / SEGMENT_NAME.format(segment.index)
            try:
                size = path.stat().st_size
            except OSError:
                return []
            skip = meta.init_bytes if parts else 0
            if size > skip:
                parts.append((path, skip, size - skip))
        return parts

    def delete_files(self, recording_id: str) -> None:
        shutil.rmtree(self.path_of(recording_id), ignore_errors=True)


RECORDINGS_KEY = web.AppKey("recordings", RecordingsIndex)
