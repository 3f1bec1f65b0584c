"""JSON Schema for request and response bodies: the same dicts validate requests and go into
the OpenAPI document, so the documentation cannot drift from what the server accepts.

``validate`` covers the subset the API uses: type, properties, required,
``additionalProperties: false``, items, enum, pattern, minimum/maximum and the min/max
of Length, Items and Properties, plus two extensions for free-form values (metadata) that
JSON Schema cannot say: ``x-maxDepth`` (nesting of objects and arrays, the value itself
counting 1) and ``x-maxBytes`` (size as compact JSON). Every number a body may carry has a
``maximum``; the body parser already refused NaN, Infinity and integers beyond 2**53 - 1.
"""

from __future__ import annotations

import json
import re
from typing import Any

from signaling.errors import ApiError, bad_request

Schema = dict[str, Any]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _fail(path: str, message: str) -> ApiError:
    return bad_request(f"{path or 'body'}: {message}", "invalid_body")


def _depth(value: Any) -> int:
    """Nesting of objects and arrays; called only on parsed JSON, whose depth the parser
    already bounded, so the recursion is bounded too."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _check_free_form(schema: Schema, value: Any, path: str) -> None:
    if "x-maxDepth" in schema and _depth(value) > schema["x-maxDepth"]:
        raise _fail(path, f"must be nested at most {schema['x-maxDepth']} levels deep")
    if "x-maxBytes" in schema:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > schema["x-maxBytes"]:
            raise _fail(path, f"must be at most {schema['x-maxBytes']} bytes as JSON")


def validate(schema: Schema, value: Any, path: str = "") -> None:
    """Raise a 400 ``invalid_body`` ApiError naming the first thing that does not fit."""
    _check_free_form(schema, value, path)
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, _TYPES[kind]) and not (
            kind in ("integer", "number") and isinstance(value, bool)
        )
        if not ok:
            raise _fail(path, f"must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
    if "enum" in schema and value not in schema["enum"]:
        raise _fail(path, f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise _fail(path, f"must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise _fail(path, f"must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise _fail(path, f"must match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise _fail(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _fail(path, f"must be at most {schema['maximum']}")
    if isinstance(value, dict):
        if len(value) > schema.get("maxProperties", len(value)):
            raise _fail(path, f"must have at most {schema['maxProperties']} fields")
        properties: dict[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                raise _fail(path, f"{name!r} is required")
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            if name in properties:
                validate(properties[name], item, where)
            elif schema.get("additionalProperties", True) is False:
                raise _fail(where, "is not a known field")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise _fail(path, f"must have at least {schema['minItems']} items")
        if len(value) > schema.get("maxItems", len(value)):
            raise _fail(path, f"must have at most {schema['maxItems']} items")
        for index, item in enumerate(value):
            if "items" in schema:
                validate(schema["items"], item, f"{path}[{index}]")


def obj(required: list[str] | None = None, **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Schema = {"type": "string"}
MAX_METADATA_DEPTH = 8
MAX_METADATA_BYTES = 16 * 1024
METADATA: Schema = {
    "type": "object", "maxProperties": 64, "x-maxDepth": MAX_METADATA_DEPTH,
    "x-maxBytes": MAX_METADATA_BYTES,
    "description": f"free-form JSON object: at most 64 fields, {MAX_METADATA_DEPTH} levels deep "
    f"and {MAX_METADATA_BYTES // 1024} KiB as JSON; numbers finite, integers within +-(2**53 - 1)",
}

TRACK: Schema = obj(
    ["sid", "kind", "codec", "muted"],
    sid=STRING, kind={"type": "string", "enum": ["audio", "video"]}, codec=STRING,
    muted={"type": "boolean"},
)
PARTICIPANT: Schema = obj(
    ["sid", "identity", "transport", "role", "name", "node", "joined_at", "metadata", "tracks"],
    sid={"type": "string", "description": "session id (one WHIP/WHEP/FLV/WS session)"},
    identity={"type": "string", "description": "the token's sub"},
    transport={"type": "string", "enum": ["whip", "rtmp", "whep", "flv", "ws"]},
    role=STRING, name=STRING, node=STRING,
    joined_at={"type": "number", "description": "unix seconds"},
    metadata=METADATA, tracks=array(ref("Track")),
)
COUNTS: Schema = obj(
    ["participants", "viewers", "by_transport"],
    participants={"type": "integer"}, viewers={"type": "integer"},
    by_transport={"type": "object", "additionalProperties": {"type": "integer"}},
)
ROOM: Schema = obj(
    ["name", "sid", "created_at", "metadata", "auto", "node", "counts"],
    name=STRING, sid=STRING, created_at={"type": "number"}, metadata=METADATA,
    auto={"type": "boolean", "description": "created by a first session, not over REST"},
    node={"type": "string", "description": "SFU node that owns the room ('' if none)"},
    counts=ref("Counts"),
    live={"type": "boolean"}, publishers=array(ref("Participant")),
    seq={"type": "integer", "description": "last event seq of the room"},
)
PAGE_LIMIT_DEFAULT = 100
PAGE_LIMIT_MAX = 1000
PAGE_QUERY: dict[str, Schema] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT_MAX,
              "default": PAGE_LIMIT_DEFAULT, "description": "items per page"},
    "cursor": {"type": "string", "maxLength": 512,
               "description": "the previous page's next_cursor (opaque)"},
}
NEXT_CURSOR: Schema = {
    "anyOf": [{"type": "string"}, {"type": "null"}],
    "description": "pass as ?cursor= for the next page; null on the last page",
}
ERROR: Schema = obj(["error"], error=obj(["code", "message"], code=STRING, message=STRING))

COMPONENTS: dict[str, Schema] = {
    "Track": TRACK, "Participant": PARTICIPANT, "Counts": COUNTS, "Room": ROOM, "Error": ERROR,
}
