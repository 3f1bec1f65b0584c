"""What every door refused, by door and reason: ``shopcast_door_refusals_total{door, reason}``.

One counter for the whole process, so an operator sees an attack or a misconfigured client on
``/metrics`` whichever door it knocks at (a banned identity retrying, someone probing
resources, a leaked FLV link replayed after its ticket expired, a client past a limit):

- every HTTP door is counted in one place, ``refusal_middleware``: each answer with a status of
  400 or more is counted under the door its path belongs to (``DOORS``) and the ``code`` of its
  JSON error (``token_expired``, ``banned``, ``not_owner``, ``malformed_sdp``,
  ``too_many_sessions``, ``body_too_large``, ``ticket_expired``...), whether a handler raised
  it, a media error was mapped to it, or a handler answered it itself (a ``Retry-After`` 429);
- a door that refuses without an HTTP answer counts itself: ``/ws`` through ``count`` (a join
  or an offer refused with an ``error`` frame), RTMP in its own books, added as sources (the
  door's ``onStatus`` refusals of a publish by code; the server's refused connections, timeouts
  before a publish and protocol errors).

Labels stay bounded: doors are a fixed list, and a reason that is not a plain code, or one past
``MAX_REASONS`` distinct ones, is counted as ``other``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aiohttp import web

from signaling.http_errors import Handler

DOORS = (  # path prefix -> door; the first match wins
    ("/whip/", "whip"), ("/whep/", "whep"), ("/live/", "flv"), ("/api/", "rest"),
    ("/ws/events/", "ws_events"), ("/ws", "ws"), ("/metrics", "metrics"),
)
OTHER_DOOR = "http"  # pages, static files, unknown paths
MAX_REASONS = 200
_PLAIN_CODE = re.compile(r"[a-z0-9_]{1,48}")


def door_of(path: str) -> str:
    for prefix, door in DOORS:
        if path.startswith(prefix) and (prefix.endswith("/") or path in (prefix, prefix + "/")):
            return door
    return OTHER_DOOR


class DoorRefusals:
    """Counters per (door, reason); one per app, read by ``/metrics``."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._sources: list[tuple[str, Mapping[str, int]]] = []

    def count(self, door: str, reason: str) -> None:
        key = (door, reason if _PLAIN_CODE.fullmatch(reason) else "other")
        if key not in self.counts and len(self.counts) >= MAX_REASONS:
            key = (door, "other")
        self.counts[key] = self.counts.get(key, 0) + 1

    def add_source(self, door: str, counts: Mapping[str, int]) -> None:
        """Counts by reason that a door keeps itself (RTMP: its server's refused connections,
        its door's refused publishes), read at render and added to ``door``'s."""
        self._sources.append((door, counts))

    def totals(self) -> dict[tuple[str, str], int]:
        totals = dict(self.counts)
        for door, counts in self._sources:
            for reason, n in counts.items():
                totals[(door, reason)] = totals.get((door, reason), 0) + n
        return totals

    def lines(self) -> list[str]:
        lines = [
            "# HELP shopcast_door_refusals_total Requests each door (whip, whep, flv, rtmp, ws, "
            "ws_events, rest, metrics, http) refused or could not serve, by error code.",
            "# TYPE shopcast_door_refusals_total counter",
        ]
        lines += [f'shopcast_door_refusals_total{{door="{door}",reason="{reason}"}} {count}'
                  for (door, reason), count in sorted(self.totals().items())]
        return lines


REFUSALS_KEY = web.AppKey("door_refusals", DoorRefusals)


def count_refusal(app: web.Application, door: str, reason: str) -> None:
    """Count a refusal the door answered without HTTP (an ``error`` frame), if the app counts."""
    refusals = app.get(REFUSALS_KEY)
    if refusals is not None:
        refusals.count(door, reason)


def _reason(response: web.StreamResponse) -> str:
    """The JSON error's ``code``, else ``http_<status>``."""
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and body.startswith(b"{") and len(body) <= 65536:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if isinstance(code, str):
            return code
    return f"http_{response.status}"


@web.middleware
async def refusal_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count each error answer (status >= 400) under its door and code. Outside the error
    middleware, so every failure arrives here already as its JSON answer."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a redirect, or an error nothing turned into JSON
        if exc.status >= 400:
            count_refusal(request.app, door_of(request.path), f"http_{exc.status}")
        raise
    if response.status >= 400:
        count_refusal(request.app, door_of(request.path), _reason(response))
    return response
