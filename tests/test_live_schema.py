"""The event schema module and docs/events.md agree; parsing refuses precisely."""

from __future__ import annotations

import msgpack
import pytest

from signaling.live import docs
from signaling.live.schema import (
    CLIENT_EVENTS,
    MAX_EVENT_BYTES,
    SERVER_EVENTS,
    EventError,
    event,
    parse,
)


def test_docs_match_the_schema_module() -> None:
    text = docs.DOC.read_text()
    assert docs.generated_part(text) == docs.render(), "run: python -m signaling.live.docs"
    for spec in [*CLIENT_EVENTS.values(), *SERVER_EVENTS.values()]:
        assert f"### `{spec.type}`" in text
        for field in spec.fields:
            assert f"| `{field.name}` |" in text


def test_the_design_types_exist() -> None:
    assert {"chat", "like", "gift", "purchase", "resume"} <= set(CLIENT_EVENTS)
    assert {"chat", "chat_deleted", "likes", "gift", "product_pinned", "sale", "stock",
            "sold_out", "order", "viewers", "cohost", "state", "error"} <= set(SERVER_EVENTS)


def test_parse_accepts_a_valid_message() -> None:
    spec, data = parse(msgpack.packb({"type": "purchase", "sku": "a", "qty": 2, "cid": "1"}))
    assert spec.type == "purchase" and data["qty"] == 2


@pytest.mark.parametrize("message, code", [
    ({"type": "like", "count": 0}, "invalid"),
    ({"type": "like", "count": 101}, "invalid"),
    ({"type": "pin"}, "invalid"),
    ({"type": 7}, "unknown_type"),
    ({1: "x", "type": "like"}, "malformed"),  # non-string keys
])
def test_parse_refuses(message: dict[object, object], code: str) -> None:
    with pytest.raises(EventError) as refused:
        parse(msgpack.packb(message, strict_types=False))
    assert refused.value.code == code


def test_size_cap_is_checked_before_decoding() -> None:
    with pytest.raises(EventError) as refused:
        parse(b"\x00" * (MAX_EVENT_BYTES + 1))
    assert refused.value.code == "too_large"
    parse(msgpack.packb({"type": "chat", "text": "x" * 200}))


def test_server_events_are_checked() -> None:
    assert event("likes", total=3) == {"type": "likes", "total": 3}
    with pytest.raises(ValueError):
        event("likes", total=3, extra=1)
    with pytest.raises(ValueError):
        event("likes")
    with pytest.raises(ValueError):
        event("nope")
