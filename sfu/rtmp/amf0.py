"""AMF0: the value encoding of RTMP commands (``connect``, ``publish``...) and of ``onMetaData``.

Values map onto Python as: number -> float, boolean -> bool, string and long string -> str,
object and typed object -> dict, ECMA array -> ``EcmaArray`` (a dict that remembers its
marker), strict array -> list, null -> None, undefined -> ``UNDEFINED``, date -> ``AmfDate``.

The decoder reads bytes from the network, so every length is checked against what is left,
nesting is bounded (a few nested objects are plenty for RTMP; thousands would only burn the
stack) and anything unknown raises ``AmfError``: references, AMF3 switches, movie clips.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sfu.rtmp.errors import AmfError

NUMBER: Final = 0x00
BOOLEAN: Final = 0x01
STRING: Final = 0x02
OBJECT: Final = 0x03
NULL: Final = 0x05
UNDEFINED_MARKER: Final = 0x06
ECMA_ARRAY: Final = 0x08
OBJECT_END: Final = 0x09
STRICT_ARRAY: Final = 0x0A
DATE: Final = 0x0B
LONG_STRING: Final = 0x0C
UNSUPPORTED: Final = 0x0D
XML_DOCUMENT: Final = 0x0F
TYPED_OBJECT: Final = 0x10

DEFAULT_MAX_DEPTH: Final = 16

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class Undefined:
    """AMF0 ``undefined``, distinct from ``null`` (None); use the ``UNDEFINED`` singleton."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED: Final = Undefined()


class EcmaArray(dict[str, object]):
    """An associative array (marker 0x08): what encoders use for ``onMetaData``."""


@dataclass(frozen=True)
class AmfDate:
    """A date: milliseconds since the Unix epoch and the (ignored by everyone) time zone."""

    ms: float
    timezone: int = 0


# --- decoding --------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "max_depth", "pos")

    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError("truncated AMF0 value")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def utf8(self, n: int) -> str:
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmfError("AMF0 string is not UTF-8") from exc

    def value(self, depth: int) -> object:
        marker = self.take(1)[0]
        if marker == NUMBER:
            number: float = _DOUBLE.unpack(self.take(8))[0]
            return number
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.utf8(self.u16())
        if marker in (LONG_STRING, XML_DOCUMENT):
            return self.utf8(self.u32())
        if marker in (NULL, UNSUPPORTED):
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == DATE:
            ms, tz = _DATE.unpack(self.take(10))
            return AmfDate(ms, tz)
        if depth >= self.max_depth:
            raise AmfError(f"AMF0 nesting deeper than {self.max_depth}")
        if marker == OBJECT:
            return self.properties({}, depth + 1, eof_ends=False)
        if marker == TYPED_OBJECT:
            self.utf8(self.u16())  # the class name: meaningless to a media server
            return self.properties({}, depth + 1, eof_ends=False)
        if marker == ECMA_ARRAY:
            self.u32()  # the count is advisory; the end marker is what ends it
            return self.properties(EcmaArray(), depth + 1, eof_ends=True)
        if marker == STRICT_ARRAY:
            count = self.u32()
            if count > len(self.data) - self.pos:  # each element takes at least one byte
                raise AmfError("AMF0 strict array longer than its message")
            return [self.value(depth + 1) for _ in range(count)]
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")

    def properties(
        self, target: dict[str, object], depth: int, *, eof_ends: bool
    ) -> dict[str, object]:
        while True:
            if eof_ends and self.pos == len(self.data):
                return target  # some encoders end an ECMA array at the end of the message
            key = self.utf8(self.u16())
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return target
            target[key] = self.value(depth)


def decode(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[object]:
    """Every AMF0 value in ``data``, in order (a command is a sequence of values)."""
    reader = _Reader(bytes(data), max_depth)
    values: list[object] = []
    while reader.pos < len(reader.data):
        values.append(reader.value(0))
    return values


# --- encoding --------------------------------------------------------------------------------


def _encode_value(value: object, out: bytearray, depth: int) -> None:
    if depth > DEFAULT_MAX_DEPTH:
        raise AmfError("value nests too deep to encode")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.ms, value.timezone)
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(value, out, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(value, out, depth)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(item, out, depth + 1)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def _encode_properties(props: Mapping[Any, object], out: bytearray, depth: int) -> None:
    for key, item in props.items():
        if not isinstance(key, str):
            raise AmfError("AMF0 property names are strings")
        raw = key.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise AmfError("AMF0 property name too long")
        out += _U16.pack(len(raw))
        out += raw
        _encode_value(item, out, depth + 1)
    out += b"\x00\x00\x09"


def encode(*values: object) -> bytes:
    """The AMF0 encoding of ``values`` one after the other (a command's body)."""
    out = bytearray()
    for value in values:
        _encode_value(value, out, 0)
    return bytes(out)
