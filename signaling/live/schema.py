"""THE event schema: every message a client may send and every event the server emits.

Messages are msgpack maps with a ``type`` key, on the ``events`` data channel of WebRTC
participants and on ``/ws/events/{room}`` for FLV viewers. This module is the one definition;
docs/events.md is rendered from it (``python -m signaling.live.docs``) and a test keeps the two
equal, so the documentation cannot drift from what the server accepts.

Why a hand-rolled spec instead of JSON Schema: client messages arrive at data-channel rates and
must be rejected cheaply and precisely (one ``error`` to that client, nothing else changes), and
the spec doubles as the builder of server events, so a server event with an undeclared field
fails in tests instead of surprising clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from signaling.claims import WATCHING, Grant
from signaling.events import RoomEvent

MAX_EVENT_BYTES = 16 * 1024  # a client message larger than this is refused, whole
LAYOUTS = ("side_by_side", "pip")  # how pages and the FLV mix place publishers; first: default
MAX_CHAT_CHARS = 200
MAX_ID = 128
# Commerce bounds, one definition for the events, REST and the services that write the store:
# every total they allow (price x qty) stays an exact JSON integer and fits a msgpack int.
MAX_PRICE = 10**12  # minor units
MAX_STOCK = 1_000_000
MAX_PER_USER = 1000
MAX_QTY = 99
MAX_SALE_S = 7 * 86400
MAX_SEQ = 2**53 - 1  # a seq a client may name (events are stamped far below it)

_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "bool": (bool,), "num": (int, float),
    "list": (list, tuple), "map": (dict,), "any": (object,),
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # one of _KINDS
    doc: str
    required: bool = True
    nullable: bool = False
    min: int | None = None  # integers: smallest value; strings and lists: shortest length
    max: int | None = None  # integers: largest value; strings and lists: longest length

    def describe(self) -> str:
        kind = self.kind + (" | nil" if self.nullable else "")
        limits = []
        if self.min is not None:
            limits.append(f"min {self.min}")
        if self.max is not None:
            limits.append(f"max {self.max}")
        return kind + (f" ({', '.join(limits)})" if limits else "")


@dataclass(frozen=True)
class EventSpec:
    type: str
    doc: str
    fields: tuple[Field, ...] = ()
    # client events: the sender needs one of these grants (admin carries all); every client
    # event names at least one, so no message type is open to any token that reached the room
    grants: tuple[Grant, ...] = ()
    reply: bool = False  # server events: sent to one client only, not through the room's bus

    def field(self, name: str) -> Field | None:
        return next((f for f in self.fields if f.name == name), None)


class EventError(Exception):
    """A message that is not a valid client event; ``code`` goes into the ``error`` reply."""

    def __init__(self, code: str, message: str, cid: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.cid = cid


CID = Field("cid", "str", "client correlation id, echoed in replies", required=False, max=64)
EPOCH_SEEN = Field("epoch", "str", "the epoch of `after_seq` (from `state` or `resync`)",
                   required=False, max=64)
SKU = Field("sku", "str", "product id", min=1, max=64)
IDENTITY = Field("identity", "str", "a participant's token sub", min=1, max=MAX_ID)


# Who may send what. Likes and gifts are a watcher's (not a chat-only token's); a purchase
# needs ``subscribe``, the grant of ``POST /rooms/{room}/orders``, so both doors sell to the
# same tokens; ``resume`` is for anyone who may join the room's events at all.
JOINING = (*WATCHING, Grant.CHAT)
BUYING = (Grant.SUBSCRIBE,)


def _client(type_: str, doc: str, *fields: Field, grants: tuple[Grant, ...]) -> EventSpec:
    return EventSpec(type_, doc, (*fields, CID), grants=grants)


CLIENT_EVENTS: dict[str, EventSpec] = {s.type: s for s in [
    _client("chat", "Send a chat message (danmaku) to the room.",
            Field("text", "str", "the message, plain text", min=1, max=MAX_CHAT_CHARS),
            grants=(Grant.CHAT,)),
    _client("like", "Taps on the like button; totals are broadcast at most every 250 ms.",
            Field("count", "int", "taps since the last like message (default 1)",
                  required=False, min=1, max=100),
            grants=WATCHING),
    _client("gift", "Send a gift from the catalog (in `state.gifts`).",
            Field("gift", "str", "gift id", min=1, max=64),
            Field("count", "int", "how many (default 1)", required=False, min=1, max=99),
            grants=WATCHING),
    _client("purchase", "Buy during a flash sale; replied to with `order` or `error` "
            "(`idempotency_key_reused` when `key` was used before for another sku or qty).",
            SKU, Field("qty", "int", "units (default 1)", required=False, min=1, max=MAX_QTY),
            Field("key", "str", "idempotency key: a retry with the same key gets the same order",
                  required=False, min=1, max=MAX_ID),
            grants=BUYING),
    _client("resume", "Ask for the events after `after_seq`: they are replied one by one as "
            "they were sent live (or a fresh `state` when history no longer reaches back, or "
            "when `epoch` is not the room's epoch any more).",
            Field("after_seq", "int", "the last seq this client saw", min=0, max=MAX_SEQ),
            EPOCH_SEEN,
            grants=JOINING),
    _client("pin", "Admin: pin a product (or unpin with nil).",
            Field("sku", "str", "product id, nil to unpin", nullable=True, max=64),
            grants=(Grant.ADMIN,)),
    _client("start_sale", "Admin: start a flash sale on a product.",
            SKU, Field("stock", "int", "units for sale", min=1, max=MAX_STOCK),
            Field("per_user_limit", "int", "units one buyer may get (0 = no limit)",
                  required=False, min=0, max=MAX_PER_USER),
            Field("duration_s", "int", "how long the sale is open", min=1, max=MAX_SALE_S),
            grants=(Grant.ADMIN,)),
    _client("delete_chat", "Admin: delete a chat message (broadcast as `chat_deleted`).",
            Field("id", "str", "the chat message's id", min=1, max=64), grants=(Grant.ADMIN,)),
    _client("mute", "Admin: stop (or allow again) a participant's chat.",
            IDENTITY, Field("muted", "bool", "default true", required=False),
            Field("duration_s", "int", "mute for this long (0 = until unmuted)",
                  required=False, min=0, max=30 * 86400),
            grants=(Grant.ADMIN,)),
    _client("ban", "Admin: kick a participant and refuse its rejoin (or lift the ban).",
            IDENTITY, Field("banned", "bool", "default true", required=False),
            grants=(Grant.ADMIN,)),
    _client("set_filter", "Admin: replace the room's chat keyword filter.",
            Field("words", "list", "blocked words (case-insensitive substrings)", max=200),
            grants=(Grant.ADMIN,)),
    _client("cohost_invite", "Anchor: invite `identity` to co-host (broadcast as `cohost`).",
            IDENTITY, grants=(Grant.PUBLISH,)),
    _client("cohost_remove", "Anchor: withdraw an invitation and end the co-host's sessions.",
            IDENTITY, grants=(Grant.PUBLISH,)),
    _client("cohost_accept", "Guest: accept this identity's invitation, then publish (WHIP).",
            grants=(Grant.COHOST,)),
    _client("cohost_decline", "Guest: decline this identity's invitation.",
            grants=(Grant.COHOST,)),
    _client("qoe", "Viewer: what its player sees, every 10 s; aggregated per room for "
            "`/metrics` and `GET /rooms/{room}/health`, never published. At most 1 KiB; "
            "one per 2 s per identity (burst 2), more are dropped unanswered. Counters are "
            "since playback started.",
            Field("transport", "str", "`webrtc` or `flv`", min=1, max=8),
            Field("layer", "str", "the layer playing (nil: the room has one)",
                  required=False, nullable=True, max=16),
            Field("fps", "num", "frames decoded per second", min=0, max=240),
            Field("width", "int", "frame width", min=0, max=8192),
            Field("height", "int", "frame height", min=0, max=8192),
            Field("played_s", "num", "seconds since playback started", min=0, max=MAX_SALE_S),
            Field("freezes", "int", "freezes (WebRTC) or rebuffers (FLV `waiting`)",
                  min=0, max=MAX_STOCK),
            Field("freeze_s", "num", "seconds frozen or rebuffering", min=0, max=MAX_SALE_S),
            Field("jitter_buffer_ms", "num", "WebRTC: mean jitter-buffer delay per frame",
                  required=False, nullable=True, min=0, max=60_000),
            Field("packets_lost", "int", "WebRTC: video packets lost", required=False,
                  nullable=True, min=0, max=2**31),
            Field("packets_received", "int", "WebRTC: video packets received",
                  required=False, nullable=True, min=0, max=2**31),
            Field("decode_ms", "num", "WebRTC: mean decode time per frame", required=False,
                  nullable=True, min=0, max=10_000),
            Field("buffer_s", "num", "FLV: seconds buffered ahead of playback",
                  required=False, nullable=True, min=0, max=600),
            Field("cores", "int", "navigator.hardwareConcurrency", required=False,
                  nullable=True, min=1, max=1024),
            Field("memory_gb", "num", "navigator.deviceMemory", required=False,
                  nullable=True, min=0, max=1024),
            grants=WATCHING),
]}


def _server(type_: str, doc: str, *fields: Field, reply: bool = False) -> EventSpec:
    return EventSpec(type_, doc, fields, reply=reply)


PRODUCT = Field("product", "map", "{sku, title, price (minor units), currency, image_url}")
LEADERBOARD = Field("leaderboard", "list", "[[identity, total value], ...], highest first")
# Commerce events a viewer sees on screen carry where the anchor's media was when they happened
# (signaling/live/media_time.py); pages hold them until their picture gets there.
MEDIA = Field("media", "map", "the anchor's media time when it happened: {flv_ms: FLV timestamp "
              "of the room's output, rtp: RTP timestamp (90 kHz) of the anchor's video as "
              "WebRTC viewers get it}; a page shows the event when the frame on screen reaches "
              "it (at most 5 s later). Absent: no live clock, show at once", required=False)

SERVER_EVENTS: dict[str, EventSpec] = {s.type: s for s in [
    _server("state", "What a joiner receives first: the room as of `seq`; live events follow "
            "from `seq + 1`.",
            Field("seq", "int", "the room's last seq this state reflects"),
            Field("epoch", "str", "the epoch the room's seq counts in: it changes only when "
                  "the seq starts again from nothing (the store lost it)"),
            Field("pinned", "map", "the pinned product", nullable=True),
            Field("sale", "map", "the flash sale (as in `sale`)", nullable=True),
            Field("likes", "int", "likes total"), Field("viewers", "int", "viewer count"),
            LEADERBOARD, Field("chat", "list", "the last 50 `chat` events, oldest first"),
            Field("gifts", "list", "gift catalog: [{id, title, value}]"),
            Field("server_ms", "int", "server clock, unix ms (for countdowns)"),
            Field("publishers", "list", "live publishers by slot (0 = the anchor): "
                  "[{identity, name, sid, slot}]"),
            Field("cohosts", "list", "co-host invitations: [{identity, invited_by, "
                  "invited_at_ms, status: invited | accepted}]"),
            Field("layout", "str", "how pages and the FLV mix place publishers: "
                  + " | ".join(LAYOUTS)),
            Field("forbid", "map", "the room's forbid while it holds: {until (unix s), reason, "
                  "by}", required=False, nullable=True), reply=True),
    _server("resync", "The room's seq started again in a new epoch (the store lost it): drop "
            "your last seq, take every event from here on (they count from 1), and send "
            "`resume` with your old `after_seq` and `epoch` for a fresh `state`. Each "
            "connection's subscription sends it when it meets the new epoch.",
            Field("epoch", "str", "the new epoch"), reply=True),
    _server("chat", "A chat message. Render `text` as text, never as HTML.",
            Field("id", "str", "message id (for `delete_chat`)"), IDENTITY,
            Field("name", "str", "display name"), Field("text", "str", "the message"),
            Field("ts", "int", "unix ms")),
    _server("chat_deleted", "A moderator deleted a message: remove it.",
            Field("id", "str", "the deleted message's id")),
    _server("likes", "The room's likes total (coalesced: at most one per 250 ms).",
            Field("total", "int", "likes so far")),
    _server("gift", "Someone sent a gift.", IDENTITY, Field("name", "str", "display name"),
            Field("gift", "str", "gift id"), Field("title", "str", "gift name"),
            Field("count", "int", "how many"), Field("value", "int", "count x unit value"),
            LEADERBOARD, MEDIA),
    _server("product_pinned", "The pinned product changed (nil: unpinned).",
            Field("product", "map", PRODUCT.doc, nullable=True), MEDIA),
    _server("sale", "A flash sale started.",
            Field("id", "str", "sale id"), SKU, Field("stock", "int", "units at start"),
            Field("remaining", "int", "units left"),
            Field("per_user_limit", "int", "units per buyer (0 = no limit)"),
            Field("starts_at_ms", "int", "unix ms"), Field("ends_at_ms", "int", "unix ms"),
            Field("server_ms", "int", "server clock when sent, unix ms"),
            Field("title", "str", "the product's title at the start"),
            Field("price", "int", "unit price at the start, minor units"),
            Field("currency", "str", "ISO 4217"),
            Field("product", "map", PRODUCT.doc, nullable=True), MEDIA),
    _server("stock", "Units left in the sale (coalesced: at most one per 250 ms).",
            SKU, Field("remaining", "int", "units left"), MEDIA),
    _server("sold_out", "The sale's last unit was sold.", SKU, MEDIA),
    _server("order", "Reply to `purchase`: the order (the same one for a retried key).",
            Field("order", "map", "{id, sale_id, sku, qty, buyer, unit_price, total, currency, "
                  "created_at_ms}"),
            Field("duplicate", "bool", "true when a retry returned the first order"), CID,
            reply=True),
    _server("viewers", "The live viewer count.", Field("count", "int", "viewers"),
            Field("by_transport", "map", "{whip, rtmp, whep, flv, ws}", required=False)),
    _server("cohost", "The anchor's call changed: an invitation, its answer, a co-host "
            "joining or leaving the stage.", IDENTITY,
            Field("action", "str", "invited | accepted | declined | removed | joined | left"),
            Field("by", "str", "who invited or removed", required=False),
            Field("slot", "int", "the co-host's publisher slot (joined, left)", required=False)),
    _server("publisher_warning", "A publisher's stream needs its encoder changed (RTMP: "
            "`bframes` when it sends B-frames, which costs WebRTC viewers a transcode). The "
            "anchor's console shows it; admins can act on it.",
            IDENTITY, Field("code", "str", "what to change: bframes"),
            Field("message", "str", "the advice, human-readable")),
    _server("network_quality", "A WebRTC publisher's uplink score changed (scored every 2 s "
            "from what the node receives: loss, jitter, bitrate against the offer's target, the "
            "node's REMB; sent on change only). For the anchor's page, which shows its advice at "
            "2 and below, and for admins; it travels as a room event, other pages ignore it.",
            IDENTITY, Field("slot", "int", "the publisher's slot (0 = the anchor)", min=0),
            Field("score", "int", "0 no media, 1 bad, 2 poor, 3 fair, 4 good, 5 excellent",
                  min=0, max=5),
            Field("loss", "num", "fraction of packets lost on the way in, last 2 s"),
            Field("jitter_ms", "num", "interarrival jitter of the video"),
            Field("rtt_ms", "num", "round-trip time when known", required=False),
            Field("bitrate_kbps", "int", "video received, last 2 s", min=0)),
    _server("room_forbidden", "An admin forbade the room: its publishing ended on every "
            "node and new publishes (and plays) are refused with `room_forbidden` until "
            "`until`. Pages show the reason.",
            Field("until", "int", "unix seconds when the forbid ends by itself"),
            Field("reason", "str", "why, for the anchor and the audience")),
    _server("forbid_lifted", "The room's forbid was lifted before `until`: publishing may "
            "resume."),
    _server("kicked", "A participant was removed (banned); that client disconnects.",
            IDENTITY, Field("reason", "str", "why, e.g. banned")),
    _server("ack", "Reply to an admin action that succeeded.",
            Field("re", "str", "the type acknowledged"), CID,
            Field("result", "any", "what the action produced", required=False), reply=True),
    _server("error", "Reply to a message that was refused; nothing changed.",
            Field("code", "str", "machine-readable reason"),
            Field("message", "str", "human-readable reason"), CID, reply=True),
    *[_server(e.value, "Room lifecycle event (see docs/api.md).",
              Field("*", "any", "the record(s) it describes", required=False))
      for e in RoomEvent if e is not RoomEvent.VIEWERS],
]}


def _check_field(spec: Field, value: Any) -> str | None:
    """Why ``value`` does not fit ``spec`` (None when it does)."""
    if value is None:
        return None if spec.nullable else "must not be nil"
    if not isinstance(value, _KINDS[spec.kind]) or (
        spec.kind in ("int", "num") and isinstance(value, bool)
    ):
        return f"must be {spec.kind}"
    size: int | float | None = None
    if isinstance(value, int | float):
        size = value
    elif isinstance(value, str | list | tuple):
        size = len(value)
    if size is not None:
        unit = "" if spec.kind in ("int", "num") else " long"
        if spec.min is not None and size < spec.min:
            return f"must be at least {spec.min}{unit}"
        if spec.max is not None and size > spec.max:
            return f"must be at most {spec.max}{unit}"
    return None


def parse(raw: bytes | str) -> tuple[EventSpec, dict[str, Any]]:
    """Decode and validate one client message, or raise ``EventError``."""
    if isinstance(raw, str):
        raise EventError("bad_frame", "messages are binary msgpack maps, not text")
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError("too_large", f"messages are limited to {MAX_EVENT_BYTES} bytes")
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise EventError("malformed", f"not msgpack: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise EventError("malformed", "a message is a msgpack map with a 'type'")
    cid = data.get("cid")
    cid = cid if isinstance(cid, str) and len(cid) <= 64 else ""
    kind = data.get("type")
    spec = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise EventError("unknown_type", f"unknown message type {kind!r}", cid)
    for name, value in data.items():
        if name == "type":
            continue
        declared = spec.field(name) if isinstance(name, str) else None
        if declared is None:
            raise EventError("invalid", f"{spec.type}: unknown field {name!r}", cid)
        problem = _check_field(declared, value)
        if problem:
            raise EventError("invalid", f"{spec.type}.{name} {problem}", cid)
    for declared in spec.fields:
        if declared.required and declared.name not in data:
            raise EventError("invalid", f"{spec.type}.{declared.name} is required", cid)
    return spec, data


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event, checked against its spec: an undeclared or missing field is a bug here,
    not a surprise for clients. Nil optional fields are left out."""
    spec = SERVER_EVENTS.get(type_)
    if spec is None:
        raise ValueError(f"undeclared server event {type_!r}")
    data: dict[str, Any] = {"type": type_}
    for name, value in fields.items():
        declared = spec.field(name)
        if declared is None:
            raise ValueError(f"{type_}: undeclared field {name!r}")
        if value is None and not declared.required:
            continue
        problem = _check_field(declared, value)
        if problem:
            raise ValueError(f"{type_}.{name} {problem}")
        data[name] = value
    missing = [f.name for f in spec.fields if f.required and f.name not in data]
    if missing:
        raise ValueError(f"{type_}: missing {', '.join(missing)}")
    return data


def error(code: str, message: str, cid: object = None) -> dict[str, Any]:
    """The ``error`` reply; ``cid`` echoes the client's message id when it sent a string one."""
    return event("error", code=code, message=message,
                 cid=cid if isinstance(cid, str) and cid else None)


def packed_error(code: str, message: str, cid: object = None) -> bytes:
    """``error`` packed for a socket or a data channel: the one builder every door uses."""
    return pack(error(code, message, cid))


def pack(data: Mapping[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(dict(data), use_bin_type=True)
    return packed
