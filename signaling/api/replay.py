"""REST: a recording's product timeline, on the recording's clock, for the replay page.

``GET /recordings/{id}/timeline`` answers whoever may fetch the recording itself: a
``subscribe`` or admin token of the recording's room (scope ``RESOURCE_ROOM``: 401, then 404
for an unknown id, then 403), as a header or ``?token=`` like the media.
The events come from the room's kept timeline (``signaling.live.timeline``), so any node that
shares the store answers the same.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from signaling.api.access import Scope
from signaling.api.recordings import TOKEN_QUERY
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, array, obj
from signaling.errors import not_found
from signaling.live.timeline import Timeline, span
from signaling.recordings_index import RECORDINGS_KEY
from signaling.tokens import Grant

EVENT: Schema = {
    "type": "object",
    "description": "t (seconds on the recording's clock), type (product_pinned, "
    "product_unpinned, sale, stock, sold_out; chat when kept), the event's own fields; "
    "at_start: what was on screen when the recording started, at t = 0",
}


async def recording_timeline(
    timeline: Timeline, recording: Mapping[str, Any], now: float | None = None
) -> dict[str, Any]:
    """The timeline answer for ``recording`` (the recordings API's object: id, room,
    started_at, duration_s, finished); a recording still being written reaches up to now."""
    now = time.time() if now is None else now
    started_at, duration_s = span(recording, now)
    events, truncated = await timeline.of_recording(recording, now)
    return {"recording": recording["id"], "room": recording["room"], "started_at": started_at,
            "duration_s": duration_s, "finished": bool(recording.get("finished", True)),
            "events": events, "truncated": truncated}


async def get_timeline(call: Call) -> web.StreamResponse:
    recording_id = call.param("id")
    meta = await call.request.app[RECORDINGS_KEY].get(recording_id)
    if meta is None:
        raise not_found(f"no recording {recording_id!r}")  # as the media route answers
    call.require_room(meta.room)
    return json_response(await recording_timeline(call.signaling.live.timeline, meta.public()))


ROUTES = [
    Route("GET", "/recordings/{id}/timeline", get_timeline, "A recording's product timeline",
          "getRecordingTimeline", "recordings", grant=Grant.SUBSCRIBE,
          scope=Scope.RESOURCE_ROOM, query={"token": TOKEN_QUERY},
          response=obj(["recording", "room", "started_at", "duration_s", "finished", "events",
                        "truncated"],
                       recording={"type": "string"}, room={"type": "string"},
                       started_at={"type": "number", "description": "unix seconds of t = 0"},
                       duration_s={"type": "number", "description": "up to now while the "
                                   "recording is being made"},
                       finished={"type": "boolean"}, events=array(EVENT),
                       truncated={"type": "boolean", "description": "the room's timeline lost "
                                  "events (over its bound) that this recording may have had"}),
          errors=(401, 403, 404),
          description="Who may fetch the recording (a subscribe or admin token of its room, "
          "header or `?token=`): the commerce events of its room that fall inside it (pins, "
          "unpins, sales, stock, sold_out), each at its time on the recording's clock."),
]
