"""REST: token minting for back ends that hand tokens to their users (admin only)."""

from __future__ import annotations

import time

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import obj
from signaling.errors import forbidden
from signaling.tokens import Grant, mint

MAX_TTL = 30 * 24 * 3600


async def mint_token(call: Call) -> web.StreamResponse:
    body = call.body
    # The route has no {room}, so any admin token passes the route check; an admin of one
    # room must not mint tokens for another room (or for '*').
    if call.claims is not None and call.claims.room not in ("*", body["room"]):
        raise forbidden(f"an admin token for room {call.claims.room!r} mints tokens for that "
                        "room only", "wrong_room")
    ttl = body.get("ttl", 3600)
    now = int(time.time())
    token = mint(
        call.signaling.settings.secret, room=body["room"], identity=body["identity"],
        grants=body["grants"], name=body.get("name", ""), ttl=ttl, now=now,
    )
    return json_response({"token": token, "expires_at": now + ttl}, status=201)


ROUTES = [
    Route("POST", "/tokens", mint_token, "Mint an access token", "mintToken", "tokens",
          body=obj(
              ["room", "identity", "grants"],
              room={"type": "string", "minLength": 1, "maxLength": 64,
                    "description": "room name, or * for every room"},
              identity={"type": "string", "minLength": 1, "maxLength": 128},
              name={"type": "string", "maxLength": 128},
              grants={"type": "array", "minItems": 1,
                      "items": {"type": "string", "enum": [g.value for g in Grant]}},
              ttl={"type": "integer", "minimum": 1, "maximum": MAX_TTL},
          ),
          response=obj(["token", "expires_at"], token={"type": "string"},
                       expires_at={"type": "integer", "description": "unix seconds"}),
          status=201, errors=(403,)),
]
