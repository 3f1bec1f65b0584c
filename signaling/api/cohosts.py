"""REST: co-host invitations (the same actions as the events channel's ``cohost_*``).

The anchor (``publish`` grant, or ``admin``) invites and removes; the guest (``cohost`` grant,
its own identity only) accepts or declines. A co-host's WHIP session is refused with 403
``not_invited`` while no invitation stands.
"""

from __future__ import annotations

from aiohttp import web

from signaling.api.commerce import room_of
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import Schema, array, obj
from signaling.errors import forbidden
from signaling.tokens import Grant

IDENTITY: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
INVITATION = obj(
    ["identity", "invited_by", "invited_at_ms", "status"], identity=IDENTITY,
    invited_by={"type": "string"}, invited_at_ms={"type": "integer"},
    status={"type": "string", "enum": ["invited", "accepted"]},
)


def _by(call: Call) -> str:
    return call.claims.identity if call.claims is not None else ""


def _guest(call: Call) -> str:
    """The path's identity, which must be the caller's own unless the caller is an admin."""
    identity = call.param("identity")
    claims = call.claims
    if claims is not None and Grant.ADMIN not in claims.grants and claims.identity != identity:
        raise forbidden("a guest answers only its own invitation", "not_your_invitation")
    return identity


async def list_cohosts(call: Call) -> web.StreamResponse:
    invitations = await call.signaling.live.cohosts.list(room_of(call))
    return json_response({"cohosts": [i.to_json() for i in invitations]})


async def invite(call: Call) -> web.StreamResponse:
    invitation = await call.signaling.live.cohosts.invite(
        room_of(call), call.body["identity"], _by(call)
    )
    return json_response(invitation.to_json(), status=201)


async def accept(call: Call) -> web.StreamResponse:
    invitation = await call.signaling.live.cohosts.accept(room_of(call), _guest(call))
    return json_response(invitation.to_json())


async def decline(call: Call) -> web.StreamResponse:
    await call.signaling.live.cohosts.decline(room_of(call), _guest(call))
    return web.Response(status=204)


async def remove(call: Call) -> web.StreamResponse:
    ended = await call.signaling.live.cohosts.remove(
        room_of(call), call.param("identity"), _by(call)
    )
    return json_response({"identity": call.param("identity"), "sessions_ended": ended})


BASE = "/rooms/{room}/cohosts"

ROUTES = [
    Route("GET", BASE, list_cohosts, "List co-host invitations", "listCohosts", "cohosts",
          grant=Grant.PUBLISH, response=obj(["cohosts"], cohosts=array(INVITATION))),
    Route("POST", BASE, invite, "Invite a co-host", "inviteCohost", "cohosts",
          grant=Grant.PUBLISH, body=obj(["identity"], identity=IDENTITY), response=INVITATION,
          status=201, errors=(400, 409),
          description="Lets `identity` publish (WHIP, with a `cohost` token) beside the anchor; "
          "the room gets a `cohost` event (action `invited`). Inviting again resets the answer."),
    Route("POST", BASE + "/{identity}/accept", accept, "Accept an invitation", "acceptCohost",
          "cohosts", grant=Grant.COHOST, response=INVITATION, errors=(403, 404),
          description="The guest's own answer (`cohost` token for that identity); then it "
          "publishes over WHIP. Publishing with a standing invitation works without it too."),
    Route("POST", BASE + "/{identity}/decline", decline, "Decline an invitation",
          "declineCohost", "cohosts", grant=Grant.COHOST, status=204, errors=(403, 404)),
    Route("DELETE", BASE + "/{identity}", remove, "Remove a co-host", "removeCohost", "cohosts",
          grant=Grant.PUBLISH, errors=(404,),
          response=obj(["identity", "sessions_ended"], identity=IDENTITY,
                       sessions_ended={"type": "integer"}),
          description="Withdraws the invitation and ends the co-host's sessions; viewers see "
          "`cohost` (removed, then left)."),
]
