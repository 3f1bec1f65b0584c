"""REST: rooms (create, list, get with live state, update metadata, close)."""

from __future__ import annotations

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import METADATA, array, obj, ref
from signaling.errors import conflict, not_found
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


async def list_rooms(call: Call) -> web.StreamResponse:
    rooms = call.signaling.rooms
    return json_response(
        {"rooms": [await rooms.summary(r) for r in await call.signaling.store.list_rooms()]}
    )


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
          description="Rooms are also created implicitly by their first session."),
    Route("GET", "/rooms", list_rooms, "List rooms", "listRooms", "rooms",
          response=obj(["rooms"], rooms=array(ref("Room")))),
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
