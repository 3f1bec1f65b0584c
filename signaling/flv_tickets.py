"""FLV tickets: short-lived signed URLs, so a leaked HTTP-FLV link stops working.

A player cannot send ``Authorization``, so an FLV URL carries its credential in the query,
where it is copied along with the link (chat, a forum, a restreaming site). The playback plan
therefore hands out ``/live/{room}.flv?ticket=...``: the room, the viewer's identity (so a ban
still holds) and an expiry ``TICKET_TTL_S`` ahead (never past the token's own ``exp``), signed
with HMAC-SHA256 under a key derived from the token secret. A ticket only has to *start* a
connection: an FLV response that started before the ticket expired plays on. A long-lived
token in ``?token=`` is accepted only with ``--flv-plain-token``; a ``Bearer`` header always
(it does not travel with a link).

One rule, ``flv_claims``, for the SFU node's FLV door (``sfu/flv/http.py``) and a signaling
process's front door, which share the token secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from signaling.claims import Claims, Grant
from signaling.errors import ApiError, forbidden, unauthorized
from signaling.tokens import authorize

TICKET_TTL_S = 60
MAX_TICKET_CHARS = 1024  # a room (64) and an identity (128 characters, UTF-8): under 900
KEY_LABEL = b"shopcast-flv-tickets"


def ticket_key(token_secret: str) -> bytes:
    """HMAC-SHA256(token secret, label): one-way, so a ticket key never signs a token."""
    return hmac.new(token_secret.encode(), KEY_LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(token_secret: str, body: str) -> str:
    return _b64(hmac.new(ticket_key(token_secret), body.encode(), hashlib.sha256).digest())


def issue(token_secret: str, claims: Claims, room: str, *, ttl_s: int = TICKET_TTL_S,
          now: float | None = None) -> str:
    """A ticket for ``claims``' identity to start watching ``room`` over FLV within ``ttl_s``."""
    expires = int(time.time() if now is None else now) + ttl_s
    if claims.expires_at > 0:
        expires = min(expires, claims.expires_at)
    payload = {"r": room, "s": claims.identity, "e": expires}  # no display name: unused here
    body = _b64(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{body}.{_signature(token_secret, body)}"


def verify(token_secret: str, ticket: str, room: str, *, now: float | None = None) -> Claims:
    """The claims a ticket carries (``subscribe`` in ``room``), or a 401/403 ``ApiError``:
    ``invalid_ticket`` (forged, damaged, oversized), ``ticket_expired``, ``wrong_room``."""
    body, _, signature = ticket.partition(".")
    if len(ticket) > MAX_TICKET_CHARS or not hmac.compare_digest(
            signature.encode(), _signature(token_secret, body).encode()):
        raise unauthorized("invalid FLV ticket: ask the playback plan for a new URL",
                           "invalid_ticket")
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, binascii.Error) as exc:  # signed by us, so never in practice
        raise unauthorized("invalid FLV ticket", "invalid_ticket") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("r"), str) \
            or not isinstance(payload.get("s"), str) or not isinstance(payload.get("e"), int):
        raise unauthorized("invalid FLV ticket", "invalid_ticket")
    if payload["e"] <= (time.time() if now is None else now):
        raise unauthorized("FLV ticket has expired: ask the playback plan for a new URL",
                           "ticket_expired")
    if payload["r"] != room:
        raise forbidden(f"ticket is for room {payload['r']!r}, not {room!r}", "wrong_room")
    return Claims(identity=payload["s"], room=room, grants=frozenset({Grant.SUBSCRIBE}),
                  expires_at=payload["e"])


def flv_claims(token_secret: str, room: str, *, authorization: str | None,
               ticket: str | None, query_token: str | None, plain_token: bool) -> Claims:
    """The FLV door's credential check, one rule for the node and the front door: a
    ``?ticket=``, else ``Authorization: Bearer``, else ``?token=`` when ``plain_token``
    allows it (``401 ticket_required`` otherwise); a token needs ``subscribe`` in ``room``."""
    if ticket is not None:
        return verify(token_secret, ticket, room)
    if not plain_token:
        if not authorization and query_token is not None:  # an empty header is no header
            raise ApiError(401, "ticket_required",
                           "FLV URLs carry a ?ticket= from the playback plan "
                           "(GET /api/v1/rooms/{room}/playback); ?token= is off on this server")
        query_token = None  # never a fallback the flag turned off
    return authorize(token_secret, authorization, grant=Grant.SUBSCRIBE, room=room,
                     query_token=query_token)
