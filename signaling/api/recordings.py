"""REST: recordings of a room (list, media with HTTP Range, delete) and whether it records.

The list and the media take a ``subscribe`` (or admin) token of the recording's room, as a
Bearer header or ``?token=`` (a ``<video src>`` cannot send headers), so viewers can replay;
switching recording and deleting need the room's admin. A recording's media is one byte stream
(segment 0, then each later segment without its repeated initialization; see
``signaling.recordings_index``) served from the record directory of the process that answers:
with several processes, they share that directory (the same path on every host), else a
process without the files answers ``404 recording_unavailable``.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from aiohttp import web

from signaling.api.access import Scope
from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, array, obj
from signaling.errors import ApiError, conflict, not_found
from signaling.recordings_index import (
    RECORDINGS_KEY,
    TOPIC,
    RecordingMeta,
    RecordingsIndex,
    valid_recording_id,
)
from signaling.tokens import Grant

CHUNK = 256 * 1024
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
TOKEN_QUERY: Schema = {"type": "string", "maxLength": 4096,
                       "description": "the token, for players that cannot send headers"}
SEGMENT: Schema = obj(["index", "start_s", "duration_s", "bytes"],
                      index={"type": "integer"}, start_s={"type": "number"},
                      duration_s={"type": "number"}, bytes={"type": "integer"})
RECORDING: Schema = obj(
    ["id", "room", "started_at", "duration_s", "bytes", "segments", "finished"],
    id={"type": "string"}, room={"type": "string"},
    started_at={"type": "number", "description": "unix time of the recording's time 0"},
    duration_s={"type": "number"}, bytes={"type": "integer"}, segments=array(SEGMENT),
    finished={"type": "boolean"},
)


def _index(call: Call) -> RecordingsIndex:
    return call.request.app[RECORDINGS_KEY]


async def _recording(call: Call) -> RecordingMeta:
    """The recording named in the path, once the token may have it: the route's declaration
    checked the token and its grant (401 before 404, so an unknown caller learns nothing of
    which ids exist), its room is checked here once the recording is found."""
    recording_id = call.param("id")
    meta = await _index(call).get(recording_id) if valid_recording_id(recording_id) else None
    if meta is None:
        raise not_found(f"no recording {recording_id!r}")
    call.require_room(meta.room)
    return meta


async def set_recording(call: Call) -> web.StreamResponse:
    room = room_of(call)
    enabled = bool(call.body["enabled"])
    await _index(call).set_enabled(room, enabled)
    await call.signaling.bus.notify(TOPIC, {"room": room, "enabled": enabled})
    return json_response({"room": room, "enabled": enabled})


async def list_recordings(call: Call) -> web.StreamResponse:
    room = room_of(call)
    recordings = await _index(call).of_room(room)
    return json_response({"recordings": [meta.public() for meta in recordings]})


def _byte_range(header: str | None, total: int) -> tuple[int, int] | None:
    """(first, last) inclusive of a single ``Range: bytes=`` header; None for the whole.
    416 for one that cannot be satisfied or is not understood."""
    if header is None:
        return None
    match = RANGE.match(header.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise _Unsatisfiable(total, "only one bytes=first-last range is served")
    first_text, last_text = match.groups()
    if not first_text:  # the last N bytes
        first, last = max(total - int(last_text), 0), total - 1
    else:
        first = int(first_text)
        last = min(int(last_text), total - 1) if last_text else total - 1
    if first >= total or first > last:
        raise _Unsatisfiable(total, f"range {header!r} is outside 0-{total - 1}")
    return first, last


class _Unsatisfiable(ApiError):
    """416, answered with ``Content-Range: bytes */<total>`` (RFC 9110 15.5.17)."""

    def __init__(self, total: int, message: str) -> None:
        super().__init__(416, "range_not_satisfiable", message)
        self.total = total

    def to_response(self) -> web.Response:
        response = super().to_response()
        response.headers["Content-Range"] = f"bytes */{self.total}"
        return response


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as source:
        source.seek(offset)
        return source.read(size)


async def get_media(call: Call) -> web.StreamResponse:
    meta = await _recording(call)
    parts = _index(call).byte_parts(meta)
    if not parts:
        raise not_found(f"recording {meta.id!r} has no files here (made on node {meta.node})",
                        "recording_unavailable")
    total = sum(length for _, _, length in parts)
    try:
        wanted = _byte_range(call.request.headers.get("Range"), total)
    except _Unsatisfiable as refused:
        return refused.to_response()
    first, last = wanted if wanted is not None else (0, total - 1)
    response = web.StreamResponse(status=206 if wanted is not None else 200, headers={
        "Content-Type": "video/mp4", "Accept-Ranges": "bytes",
        "Content-Length": str(last - first + 1), "Cache-Control": "no-cache",
    })
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {first}-{last}/{total}"
    await response.prepare(call.request)
    if call.request.method == "HEAD":
        return response
    position = 0
    for path, offset, length in parts:
        start, end = max(first, position), min(last + 1, position + length)
        while start < end:
            size = min(CHUNK, end - start)
            data = await asyncio.to_thread(_read, path, offset + start - position, size)
            if not data:
                break  # the file shrank (deleted meanwhile): end the response short
            await response.write(data)
            start += len(data)
        position += length
    await response.write_eof()
    return response


async def delete_recording(call: Call) -> web.StreamResponse:
    meta = await _recording(call)
    if not meta.finished and not meta.abandoned(time.time()):
        raise conflict(f"recording {meta.id!r} is still being made; stop it first "
                       "(PUT /rooms/{room}/recording {\"enabled\": false})",
                       "recording_in_progress")
    await _index(call).remove(meta)
    return web.Response(status=204)


ROUTES = [
    Route("PUT", "/rooms/{room}/recording", set_recording, "Record a room, or stop",
          "setRecording", "recordings",
          body=obj(["enabled"], enabled={"type": "boolean"}),
          response=obj(["room", "enabled"], room={"type": "string"},
                       enabled={"type": "boolean"}),
          description="Kept in the store: a live room starts or stops recording at once on "
          "its node, a room that goes live later follows it (unset: the --record default)."),
    Route("GET", "/rooms/{room}/recordings", list_recordings, "A room's recordings",
          "listRecordings", "recordings", grant=Grant.SUBSCRIBE, errors=(401, 403),
          response=obj(["recordings"], recordings=array(RECORDING)),
          query={"token": TOKEN_QUERY},
          description="A subscribe or admin token of the room. `started_at` + t is the wall "
          "time of recording time t."),
    Route("GET", "/recordings/{id}", get_media, "A recording's MP4, seekable",
          "getRecording", "recordings", grant=Grant.SUBSCRIBE, scope=Scope.RESOURCE_ROOM,
          errors=(401, 403, 404, 416),
          response={"type": "string", "format": "binary",
                    "description": "video/mp4 (fragmented), with HTTP Range"},
          query={"token": TOKEN_QUERY},
          description="A subscribe or admin token of the recording's room. The whole "
          "recording as one fragmented MP4; `Range: bytes=` answers 206."),
    Route("DELETE", "/recordings/{id}", delete_recording, "Delete a finished recording",
          "deleteRecording", "recordings", scope=Scope.RESOURCE_ROOM, status=204,
          errors=(401, 403, 404, 409), query={"token": TOKEN_QUERY},
          description="An admin token of the recording's room; files and index entry go."),
]
