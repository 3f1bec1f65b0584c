"""REST: the compliance forbid of a room (``signaling/live/forbid.py`` says what it does).

``POST`` forbids until a unix time with a reason, ``GET`` shows the forbid in force (404
``not_forbidden`` when none), ``DELETE`` lifts it. Admin of the room only.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, obj
from signaling.errors import not_found
from signaling.live.forbid import MAX_REASON_CHARS

LATEST_UNIX_S = 2**32 - 1  # a static bound for the schema (2106); the handler: within a year

FORBID: Schema = obj(
    ["until", "reason", "by"],
    until={"type": "integer", "description": "unix seconds when the forbid ends by itself"},
    reason={"type": "string"}, by={"type": "string", "description": "the admin's identity"},
)


async def forbid(call: Call) -> web.StreamResponse:
    by = call.claims.identity if call.claims is not None else ""
    record = await call.signaling.live.forbids.forbid(
        room_of(call), call.body["until"], call.body["reason"], by)
    return json_response(record.to_json(), status=201)


async def show(call: Call) -> web.StreamResponse:
    room = room_of(call)
    record = await call.signaling.live.forbids.get(room)
    if record is None:
        raise not_found(f"room {room!r} is not forbidden", "not_forbidden")
    return json_response(record.to_json())


async def lift(call: Call) -> web.StreamResponse:
    room = room_of(call)
    if not await call.signaling.live.forbids.lift(room):
        raise not_found(f"room {room!r} is not forbidden", "not_forbidden")
    return web.Response(status=204)


BASE = "/rooms/{room}/forbid"

ROUTES = [
    Route("POST", BASE, forbid, "Forbid the room's publishing until a time", "forbidRoom",
          "compliance", status=201, errors=(400,),
          body=obj(["until", "reason"],
                   until={"type": "integer", "minimum": 0, "maximum": LATEST_UNIX_S,
                          "description": "unix seconds, in the future and within a year"},
                   reason={"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS}),
          response=FORBID,
          description="Ends the room's publishing on every node at once (WHIP anchor, co-hosts, "
          "RTMP encoder), refuses new publishes and plays with `403 room_forbidden` and the "
          "reason until `until`, and sends every participant `room_forbidden`. Kept in the "
          "store: it holds across nodes and restarts."),
    Route("GET", BASE, show, "The room's forbid in force", "getForbid", "compliance",
          response=FORBID, errors=(404,)),
    Route("DELETE", BASE, lift, "Lift the room's forbid", "liftForbid", "compliance",
          status=204, errors=(404,),
          description="Publishing may resume at once; participants get `forbid_lifted`."),
]
