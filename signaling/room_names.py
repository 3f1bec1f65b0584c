"""The room-name rule, one definition for every door: REST, WHIP/WHEP, HTTP-FLV, /ws and RTMP.

Signaling's doors refuse a bad name with ``require_room_name`` (an ``ApiError``); the media
plane's doors with ``sfu.errors.require_room_name`` (a ``BadRoom``, mapped to the same status and
code). Both test ``valid_room_name`` and say ``ROOM_NAME_RULE``. Plain data, no web code: a
worker process may load it.
"""

from __future__ import annotations

import re

from signaling.errors import bad_request

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ROOM_NAME_RULE = "room names are 1-64 letters, digits, '.', '_' or '-'"


def valid_room_name(name: str) -> bool:
    """1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return bool(ROOM_NAME.match(name))


def require_room_name(name: str) -> str:
    """``name`` when it follows the rule; else a 400 ``bad_room``."""
    if not valid_room_name(name):
        raise bad_request(ROOM_NAME_RULE, "bad_room")
    return name
