"""REST: a room's latest compliance snapshot (``signaling/snapshots.py``), admin of the room.

``GET /rooms/{room}/snapshot`` answers the JPEG itself (``image/jpeg``, ``X-Snapshot-Taken-At``
in unix seconds, never cached), or ``404 no_snapshot`` (JSON) when none is kept: the room never
went live here, snapshots are off, or the last one is older than the store keeps it. Read from
the store, so any front door answers whichever node took it.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route
from signaling.errors import not_found
from signaling.snapshots import latest_snapshot


async def snapshot(call: Call) -> web.StreamResponse:
    room = room_of(call)
    latest = await latest_snapshot(call.signaling.store, room)
    if latest is None:
        raise not_found(f"no snapshot of room {room!r} is kept", "no_snapshot")
    taken_at, jpeg = latest
    return web.Response(body=jpeg, content_type="image/jpeg", headers={
        "X-Snapshot-Taken-At": f"{taken_at:.3f}", "Cache-Control": "no-store"})


ROUTES = [
    Route("GET", "/rooms/{room}/snapshot", snapshot, "The room's latest snapshot (JPEG)",
          "getSnapshot", "compliance", errors=(404,),
          description="The newest keyframe of the live room as `image/jpeg` (taken every "
          "`--snapshot-interval-s`; header `X-Snapshot-Taken-At`, unix seconds); `404 "
          "no_snapshot` when none is kept."),
]
