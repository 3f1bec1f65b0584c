"""REST: token minting for back ends that hand tokens to their users (admin only).

Its scope is the minted room (``signaling.api.access``): an admin of room X mints tokens for X
only, never for ``*``; only an admin token for ``*`` mints for other rooms or for ``*``.
"""

from __future__ import annotations

import time

from aiohttp import web

from signaling.api.access import Scope
from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import obj
from signaling.errors import bad_request
from signaling.tokens import EVERY_ROOM, WILDCARD_NEEDS_ADMIN, Grant, mint

MAX_TTL = 30 * 24 * 3600


async def mint_token(call: Call) -> web.StreamResponse:
    body = call.body
    if body["room"] == EVERY_ROOM and Grant.ADMIN.value not in body["grants"]:
        raise bad_request(WILDCARD_NEEDS_ADMIN, "wildcard_needs_admin")
    ttl = body.get("ttl", 3600)
    now = int(time.time())
    token = mint(
        call.signaling.settings.secret, room=body["room"], identity=body["identity"],
        grants=body["grants"], name=body.get("name", ""), ttl=ttl, now=now,
    )
    return json_response({"token": token, "expires_at": now + ttl}, status=201)


ROUTES = [
    Route("POST", "/tokens", mint_token, "Mint an access token", "mintToken", "tokens",
          scope=Scope.MINTED_ROOM,
          body=obj(
              ["room", "identity", "grants"],
              room={"type": "string", "minLength": 1, "maxLength": 64,
                    "description": "room name, or * for every room (admin grant only)"},
              identity={"type": "string", "minLength": 1, "maxLength": 128},
              name={"type": "string", "maxLength": 128},
              grants={"type": "array", "minItems": 1,
                      "items": {"type": "string", "enum": [g.value for g in Grant]}},
              ttl={"type": "integer", "minimum": 1, "maximum": MAX_TTL},
          ),
          response=obj(["token", "expires_at"], token={"type": "string"},
                       expires_at={"type": "integer", "description": "unix seconds"}),
          status=201, errors=(400, 403),
          description="An admin of room X mints tokens for X only; minting for another room "
          "or for * needs an admin token for *. Only admin tokens may name room * "
          "(400 wildcard_needs_admin)."),
]
