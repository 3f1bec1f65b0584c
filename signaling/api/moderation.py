"""REST: chat moderation (mute, ban, delete a message, keyword filter) and chat history.

The same actions admins can send over their channel; both go through ``signaling.live``.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, array, obj

IDENTITY: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
CHAT: Schema = {"type": "object", "description": "a chat event: id, identity, name, text, ts, seq"}


async def history(call: Call) -> web.StreamResponse:
    room = room_of(call)
    live = call.signaling.live
    return json_response({"messages": await live.chat.history(room),
                          "filter": await live.moderation.words(room)})


async def mute(call: Call) -> web.StreamResponse:
    body = call.body
    await call.signaling.live.moderation.mute(
        room_of(call), body["identity"], body.get("muted", True), body.get("duration_s", 0)
    )
    return json_response({"identity": body["identity"], "muted": body.get("muted", True)})


async def ban(call: Call) -> web.StreamResponse:
    body = call.body
    await call.signaling.live.moderation.ban(room_of(call), body["identity"],
                                             body.get("banned", True))
    return json_response({"identity": body["identity"], "banned": body.get("banned", True)})


async def delete_message(call: Call) -> web.StreamResponse:
    await call.signaling.live.chat.delete(room_of(call), call.param("id"))
    return web.Response(status=204)


async def set_filter(call: Call) -> web.StreamResponse:
    words = await call.signaling.live.moderation.set_filter(room_of(call), call.body["words"])
    return json_response({"words": words})


BASE = "/rooms/{room}/chat"

ROUTES = [
    Route("GET", BASE, history, "Chat history and keyword filter", "getChat", "moderation",
          response=obj(["messages", "filter"], messages=array(CHAT),
                       filter=array({"type": "string"}))),
    Route("POST", BASE + "/mute", mute, "Mute or unmute a participant's chat", "muteChat",
          "moderation",
          body=obj(["identity"], identity=IDENTITY, muted={"type": "boolean"},
                   duration_s={"type": "integer", "minimum": 0, "maximum": 30 * 86400,
                               "description": "0 = until unmuted"}),
          response=obj(["identity", "muted"], identity=IDENTITY, muted={"type": "boolean"})),
    Route("POST", BASE + "/ban", ban, "Ban (kick and refuse rejoin) or unban", "banParticipant",
          "moderation", body=obj(["identity"], identity=IDENTITY, banned={"type": "boolean"}),
          response=obj(["identity", "banned"], identity=IDENTITY, banned={"type": "boolean"}),
          description="A ban ends the identity's sessions (media and events) and refuses new "
          "ones until lifted; the room gets a `kicked` event."),
    Route("DELETE", BASE + "/{id}", delete_message, "Delete a chat message", "deleteChat",
          "moderation", status=204, errors=(404,),
          description="Removed from history; everyone gets `chat_deleted`."),
    Route("POST", BASE + "/filter", set_filter, "Replace the keyword filter", "setChatFilter",
          "moderation",
          body=obj(["words"], words={"type": "array", "maxItems": 200,
                                     "items": {"type": "string", "maxLength": 64}}),
          response=obj(["words"], words=array({"type": "string"}))),
]
