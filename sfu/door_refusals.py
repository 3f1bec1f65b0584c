"""What the HTTP media doors refused in their authorization step, by door and reason.

WHIP, WHEP (``POST`` and ``DELETE``) and HTTP-FLV count every error they answer with, by its
code: token, grant and room problems, a banned identity (``banned``), a ``DELETE`` by someone
who does not own the session (``not_owner``), and the media plane's refusals as their doors
answer them (``malformed_sdp``, ``not_live``, the session limits...). An operator sees an attack
(a banned identity retrying, someone probing resources) on ``/metrics`` as
``shopcast_door_refusals_total{door, reason}``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from aiohttp import web

from signaling.errors import ApiError
from signaling.http_errors import Handler


class DoorRefusals:
    """Counters per (door, reason); one per app, read by ``/metrics``."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def count(self, door: str, reason: str) -> None:
        key = (door, reason)
        self.counts[key] = self.counts.get(key, 0) + 1

    def lines(self) -> list[str]:
        lines = [
            "# HELP shopcast_door_refusals_total Requests the WHIP, WHEP and HTTP-FLV doors "
            "refused (token, grant, room, ban, ownership, media errors), by door and reason.",
            "# TYPE shopcast_door_refusals_total counter",
        ]
        lines += [f'shopcast_door_refusals_total{{door="{door}",reason="{reason}"}} {count}'
                  for (door, reason), count in sorted(self.counts.items())]
        return lines


REFUSALS_KEY = web.AppKey("door_refusals", DoorRefusals)


def counted(door: str) -> Callable[[Handler], Handler]:
    """Decorate a door's handler (outside ``media_errors``, so media errors arrive as their
    ``ApiError``): each refusal is counted under ``door`` and its code, when the app has a
    ``DoorRefusals``, then raised on unchanged."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except ApiError as exc:
                refusals = request.app.get(REFUSALS_KEY)
                if refusals is not None:
                    refusals.count(door, exc.code)
                raise

        return wrapped

    return decorate
