"""Parsing untrusted JSON with bounds: nesting depth, no NaN/Infinity, integers that every
JSON reader and msgpack can carry.

The standard parser recurses once per nesting level (a 40 KB ``[[[[...`` is a RecursionError),
accepts ``NaN`` and ``Infinity`` (which it then writes back as invalid JSON), turns ``1e400``
into ``inf`` and reads integers of any size (2**64 cannot be packed into a msgpack event).
``loads`` measures the depth with one flat scan before the parser runs, and refuses the rest
while parsing, so nothing unbounded reaches a handler or the store.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # arrays and objects nested in one another
MAX_INT = 2**53 - 1  # the integers every JSON reader (a browser's included) reads exactly

_SPECIAL = re.compile(rb'[\[\]{}"\\]')


class JsonBoundsError(ValueError):
    """A document that is JSON but outside the bounds; the message says which."""


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw``, brackets in strings not counted.

    One pass over the structural characters only, so it is linear whatever the input.
    """
    deepest = level = 0
    in_string = False
    skip = -1  # the position right after a backslash inside a string
    for match in _SPECIAL.finditer(raw):
        pos = match.start()
        if pos == skip:
            continue
        char = raw[pos]
        if in_string:
            if char == 0x5C:  # backslash: the next character is escaped
                skip = pos + 1
            elif char == 0x22:
                in_string = False
        elif char == 0x22:
            in_string = True
        elif char in b"[{":
            level += 1
            deepest = max(deepest, level)
        elif char in b"]}":
            level -= 1
    return deepest


def _constant(name: str) -> Any:
    raise JsonBoundsError(f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonBoundsError(f"{text} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 16:  # before int(): huge digit strings are slow to convert
        raise JsonBoundsError(f"{text[:20]}... is out of range (at most {MAX_INT} in size)")
    value = int(text)
    if abs(value) > MAX_INT:
        raise JsonBoundsError(f"{text} is out of range (at most {MAX_INT} in size)")
    return value


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw``; ``JsonBoundsError`` for a document out of bounds, ``ValueError`` (or
    ``UnicodeDecodeError``) for one that is not JSON."""
    data = raw.encode() if isinstance(raw, str) else raw
    found = depth(data)
    if found > max_depth:
        raise JsonBoundsError(f"nested deeper than {max_depth} levels")
    return json.loads(data, parse_constant=_constant, parse_float=_float, parse_int=_int)
