"""REST: the audience's health in a room, from the viewers' QoE reports (``signaling/live/qoe.py``).

``GET /rooms/{room}/health`` is for the room's anchor (publish) and its admins: the viewers
that reported within the expiry, the room's stall ratio, fps, jitter-buffer and FLV-buffer
percentiles, and how many viewers play each transport and layer. Read from the store, so any
front door answers for viewers whose reports reached any process.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import obj
from signaling.claims import Grant

NUMBER_OR_NULL = {"anyOf": [{"type": "number"}, {"type": "null"}]}
SPREAD = obj(["p50", "p90", "p99"], p50=NUMBER_OR_NULL, p90=NUMBER_OR_NULL, p99=NUMBER_OR_NULL)
COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}


async def health(call: Call) -> web.StreamResponse:
    return json_response(await call.signaling.live.qoe.health(room_of(call)))


ROUTES = [
    Route("GET", "/rooms/{room}/health", health, "The audience's health from viewers' QoE "
          "reports", "getRoomHealth", "rooms", grant=Grant.PUBLISH,
          response=obj(["room", "expiry_s", "viewers_reporting", "stall_ratio", "fps",
                        "jitter_buffer_ms", "flv_buffer_s", "transports", "layers"],
                       room={"type": "string"}, expiry_s={"type": "number"},
                       viewers_reporting={"type": "integer"}, stall_ratio={"type": "number"},
                       fps=SPREAD, jitter_buffer_ms=SPREAD, flv_buffer_s=SPREAD,
                       transports=COUNTS, layers=COUNTS),
          description="From each viewer's last `qoe` report within `expiry_s` (viewer pages "
          "send one every 10 s): `viewers_reporting`, `stall_ratio` (time frozen or "
          "rebuffering over time played, all reporters), percentiles of fps, WebRTC "
          "jitter-buffer delay and FLV buffer (null without reports carrying them), and "
          "reporters by transport and layer (`single`: the room has one). Needs the room's "
          "publish or admin grant."),
]
