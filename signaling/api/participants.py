"""REST: participants (list, get, kick, mute, update metadata), addressed by identity.

One identity may hold several sessions (publishing and watching, or one token on two
devices); these operations act on all of them, and answers list every session.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import METADATA, array, obj, ref
from signaling.errors import not_found
from signaling.store import ParticipantRecord


def _sessions(found: list[ParticipantRecord], call: Call) -> list[ParticipantRecord]:
    if not found:
        raise not_found(
            f"no participant {call.param('identity')!r} in room {call.param('room')!r}",
            "participant_not_found",
        )
    return found


async def list_participants(call: Call) -> web.StreamResponse:
    participants = await call.signaling.store.list_participants(call.param("room"))
    return json_response({"participants": [p.to_json() for p in participants]})


async def get_participant(call: Call) -> web.StreamResponse:
    rooms = call.signaling.rooms
    sessions = _sessions(await rooms.sessions_of(call.param("room"), call.param("identity")), call)
    return json_response({"identity": call.param("identity"),
                          "sessions": [p.to_json() for p in sessions]})


async def kick(call: Call) -> web.StreamResponse:
    kicked = _sessions(
        await call.signaling.rooms.kick(call.param("room"), call.param("identity")), call
    )
    return json_response({"identity": call.param("identity"),
                          "sessions": [p.to_json() for p in kicked]})


async def mute(call: Call) -> web.StreamResponse:
    room, identity = call.param("room"), call.param("identity")
    _sessions(await call.signaling.rooms.sessions_of(room, identity), call)
    tracks = await call.signaling.rooms.mute(
        room, identity, call.body.get("muted", True),
        track_sid=call.body.get("track_sid", ""), kind=call.body.get("kind", ""),
    )
    if not tracks:
        raise not_found(f"{identity!r} publishes no matching track", "track_not_found")
    return json_response({"identity": identity, "tracks": [t.to_json() for t in tracks]})


async def update_participant(call: Call) -> web.StreamResponse:
    updated = _sessions(
        await call.signaling.rooms.update_participant(
            call.param("room"), call.param("identity"), call.body["metadata"]
        ),
        call,
    )
    return json_response({"identity": call.param("identity"),
                          "sessions": [p.to_json() for p in updated]})


SESSIONS = obj(["identity", "sessions"], identity={"type": "string"},
               sessions=array(ref("Participant")))
BASE = "/rooms/{room}/participants"

ROUTES = [
    Route("GET", BASE, list_participants, "List a room's participants (sessions)",
          "listParticipants", "participants",
          response=obj(["participants"], participants=array(ref("Participant")))),
    Route("GET", BASE + "/{identity}", get_participant, "Get a participant's sessions",
          "getParticipant", "participants", response=SESSIONS, errors=(404,)),
    Route("DELETE", BASE + "/{identity}", kick, "Kick a participant", "kickParticipant",
          "participants", response=SESSIONS, errors=(404,),
          description="Ends every session of the identity in the room; returns them."),
    Route("PATCH", BASE + "/{identity}", update_participant, "Replace a participant's metadata",
          "updateParticipant", "participants", body=obj(["metadata"], metadata=METADATA),
          response=SESSIONS, errors=(404,)),
    Route("POST", BASE + "/{identity}/mute", mute, "Mute or unmute published tracks",
          "muteParticipant", "participants",
          body=obj([], muted={"type": "boolean", "description": "default true"},
                   track_sid={"type": "string", "description": "only this track"},
                   kind={"type": "string", "enum": ["audio", "video"],
                         "description": "only tracks of this kind"}),
          response=obj(["identity", "tracks"], identity={"type": "string"},
                       tracks=array(ref("Track"))),
          errors=(404,),
          description="The SFU stops forwarding a muted track to viewers until unmuted."),
]
