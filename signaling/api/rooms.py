"""REST: rooms (create, list, get with live state, update metadata, close)."""

from __future__ import annotations

import base64
import binascii
import json

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import (
    METADATA,
    NEXT_CURSOR,
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    PAGE_QUERY,
    array,
    obj,
    ref,
)
from signaling.errors import bad_request, conflict, not_found
from signaling.room_names import require_room_name
from signaling.store import RoomRecord

ROOM_NAME_SCHEMA = {
    "type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$",
}


async def _room(call: Call) -> RoomRecord:
    name = call.param("room")
    room = await call.signaling.store.get_room(name)
    if room is None:
        raise not_found(f"no room {name!r}", "room_not_found")
    return room


async def create_room(call: Call) -> web.StreamResponse:
    name = require_room_name(call.body["name"])
    room, created = await call.signaling.rooms.create(name, call.body.get("metadata"))
    if not created:
        raise conflict(f"room {name!r} already exists", "room_exists")
    return json_response(await call.signaling.rooms.summary(room), status=201)


def _cursor(room: RoomRecord) -> str:
    """Opaque to clients: the last room's place in the (created_at, name) order."""
    raw = json.dumps([room.created_at, room.name], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, name = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise bad_request("cursor: not a cursor this API gave out", "invalid_cursor") from exc
    if not isinstance(created_at, int | float) or isinstance(created_at, bool) \
            or not isinstance(name, str):
        raise bad_request("cursor: not a cursor this API gave out", "invalid_cursor")
    return float(created_at), name


def _limit(text: str | None) -> int:
    if text is None:
        return PAGE_LIMIT_DEFAULT
    if not text.isdigit() or not 1 <= int(text) <= PAGE_LIMIT_MAX:
        raise bad_request(f"limit: an integer from 1 to {PAGE_LIMIT_MAX}", "invalid_query")
    return int(text)


async def list_rooms(call: Call) -> web.StreamResponse:
    """One page: a store call for the page's rooms and one per room on it, never per room
    in the store."""
    query = call.request.query
    limit = _limit(query.get("limit"))
    cursor = query.get("cursor")
    if cursor is not None and len(cursor) > PAGE_QUERY["cursor"]["maxLength"]:
        raise bad_request("cursor: not a cursor this API gave out", "invalid_cursor")
    after = _after(cursor) if cursor else None
    page = await call.signaling.store.list_rooms(after=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    rooms = call.signaling.rooms
    return json_response({
        "rooms": [await rooms.summary(r) for r in page],
        "next_cursor": _cursor(page[-1]) if more else None,
    })


async def get_room(call: Call) -> web.StreamResponse:
    return json_response(await call.signaling.rooms.state(await _room(call)))


async def update_room(call: Call) -> web.StreamResponse:
    room = await call.signaling.rooms.update_metadata(call.param("room"), call.body["metadata"])
    if room is None:
        raise not_found(f"no room {call.param('room')!r}", "room_not_found")
    return json_response(await call.signaling.rooms.summary(room))


async def close_room(call: Call) -> web.StreamResponse:
    if not await call.signaling.rooms.close(call.param("room")):
        raise not_found(f"no room {call.param('room')!r}", "room_not_found")
    return web.Response(status=204)


ROUTES = [
    Route("POST", "/rooms", create_room, "Create a room", "createRoom", "rooms",
          body=obj(["name"], name=ROOM_NAME_SCHEMA, metadata=METADATA),
          response=ref("Room"), status=201, errors=(409,),
          description="Rooms are also created implicitly by their first session. Needs an "
          "admin token for room '*'."),
    Route("GET", "/rooms", list_rooms, "List rooms", "listRooms", "rooms",
          response=obj(["rooms", "next_cursor"], rooms=array(ref("Room")),
                       next_cursor=NEXT_CURSOR),
          query=PAGE_QUERY, errors=(400,),
          description=f"Oldest first, {PAGE_LIMIT_DEFAULT} per page unless ?limit= (at most "
          f"{PAGE_LIMIT_MAX}); follow next_cursor until it is null. Needs an admin token for "
          "room '*' (an admin of one room reads it with GET /rooms/{room})."),
    Route("GET", "/rooms/{room}", get_room, "Get a room with its live state", "getRoom",
          "rooms", response=ref("Room"), errors=(404,),
          description="Live state: publishers with their tracks, session counts by "
          "transport, owning node and the last event seq."),
    Route("PATCH", "/rooms/{room}", update_room, "Replace a room's metadata", "updateRoom",
          "rooms", body=obj(["metadata"], metadata=METADATA), response=ref("Room"),
          errors=(404,)),
    Route("DELETE", "/rooms/{room}", close_room, "Close a room", "closeRoom", "rooms",
          status=204, errors=(404,),
          description="Ends every session in the room (WebRTC and FLV) and removes it."),
]
