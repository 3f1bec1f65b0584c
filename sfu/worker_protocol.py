"""The control messages between the publisher's process and its worker processes, declared once.

Each op is one frozen dataclass: its ``op`` name, its direction and its typed fields (each with
a ``doc`` in its metadata, for the table). Both sides
encode and decode through this module, so a misspelt op or field is refused where it is read
(``ProtocolError`` with a reason the channel counts) instead of vanishing in a dispatch chain.
The wire form is the msgpack map the control channel carries: ``{"op": ..., <fields>}``, plus
the channel's envelope (``req`` on requests, ``req`` and ``reply`` on replies).
``sfu/worker_protocol_docs.py`` renders the table in docs/architecture.md from here; the
field checking itself is ``sfu/typed_maps.py``.

The per-packet media socket is not part of this protocol: it stays a 5-byte prefix and a packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar

from aiortc import RTCRtpCodecParameters

from sfu.errors import MediaError
from sfu.room_layout import RoomLayout
from sfu.typed_maps import Struct, build_specs, decode_struct, encode_struct, struct

ENVELOPE = frozenset({"op", "req", "reply"})


class Direction(Enum):
    TO_WORKER = "pool -> worker"
    FROM_WORKER = "worker -> pool"
    REPLY = "reply"


class Reason(Enum):
    """Why a control message was refused; the label of ``shopcast_worker_bad_messages_total``."""

    UNDECODABLE = "undecodable"  # not msgpack, or not a map with a string ``op``
    UNKNOWN_OP = "unknown_op"
    WRONG_DIRECTION = "wrong_direction"  # a declared op this side never receives
    MALFORMED = "malformed"  # missing, extra or mistyped fields, or a request without ``req``


class ProtocolError(Exception):
    def __init__(self, reason: Reason, op: str, detail: str) -> None:
        super().__init__(f"{reason.value} control message op={op!r}: {detail}")
        self.reason = reason
        self.op = op
        self.detail = detail


class WorkerMessage(Struct):
    """One op of the worker protocol; a request op names the type of its reply."""

    __slots__ = ()
    op: ClassVar[str]
    direction: ClassVar[Direction]
    reply_type: ClassVar[type[WorkerMessage] | None] = None


M = TypeVar("M", bound=WorkerMessage)
MESSAGES: dict[str, type[WorkerMessage]] = {}


def message(cls: type[M]) -> type[M]:
    """Declare ``cls`` as an op of the protocol (one class per op, ops unique)."""
    if cls.op in MESSAGES:
        raise ValueError(f"op {cls.op!r} declared twice")
    build_specs(cls)
    MESSAGES[cls.op] = cls
    return cls


def encode(msg: WorkerMessage) -> dict[str, Any]:
    """The msgpack map for ``msg``: its op and its fields."""
    out = encode_struct(msg)
    out["op"] = msg.op
    return out


def decode(data: Any, accepts: Direction) -> WorkerMessage:
    """The declared message in ``data``; raises ProtocolError with the reason to count."""
    if not isinstance(data, dict) or not isinstance(data.get("op"), str):
        raise ProtocolError(Reason.UNDECODABLE, "?", f"not a map with an op: {type(data).__name__}")
    op: str = data["op"]
    cls = MESSAGES.get(op)
    if cls is None:
        raise ProtocolError(Reason.UNKNOWN_OP, op, "no such op in sfu.worker_protocol")
    if cls.direction is not accepts:
        raise ProtocolError(Reason.WRONG_DIRECTION, op,
                            f"{cls.direction.value} message received as {accepts.value}")
    if cls.reply_type is not None and not isinstance(data.get("req"), int):
        raise ProtocolError(Reason.MALFORMED, op, "a request without an integer req")
    try:
        return decode_struct(cls, data, ENVELOPE)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(Reason.MALFORMED, op, str(exc)) from None


def ops(direction: Direction) -> set[str]:
    return {op for op, cls in MESSAGES.items() if cls.direction is direction}


# --- nested values ------------------------------------------------------------------------------


@struct
@dataclass(frozen=True, slots=True)
class Codec(Struct):
    """A negotiated codec, as aiortc's ``RTCRtpCodecParameters``."""

    mime_type: str = field(metadata={"doc": "e.g. `video/H264`"})
    clock_rate: int = field(metadata={"doc": "RTP clock rate"})
    channels: int | None = field(metadata={"doc": "audio channels"})
    payload_type: int | None = field(metadata={"doc": "the publisher's payload type"})
    parameters: dict[str, str | int | None] = field(metadata={"doc": "fmtp parameters"})

    @classmethod
    def of(cls, codec: RTCRtpCodecParameters) -> Codec:
        return cls(codec.mimeType, codec.clockRate, codec.channels, codec.payloadType,
                   dict(codec.parameters))

    def parameters_(self) -> RTCRtpCodecParameters:
        return RTCRtpCodecParameters(
            mimeType=self.mime_type, clockRate=self.clock_rate, channels=self.channels,
            payloadType=self.payload_type, parameters=dict(self.parameters),
        )


@struct
@dataclass(frozen=True, slots=True)
class Layout(Struct):
    """What a viewer negotiates against (``sfu.room_layout.RoomLayout``)."""

    ssrcs: list[dict[str, int]] = field(metadata={"doc": "each publisher slot's SSRC per kind"})
    codecs: dict[str, Codec] = field(metadata={"doc": "the room's codec per kind"})

    @classmethod
    def of(cls, layout: RoomLayout) -> Layout:
        return cls([dict(slot) for slot in layout.ssrcs],
                   {kind: Codec.of(codec) for kind, codec in layout.codecs.items()})

    def room_layout(self) -> RoomLayout:
        return RoomLayout(ssrcs=[dict(slot) for slot in self.ssrcs],
                          codecs={kind: c.parameters_() for kind, c in self.codecs.items()})


def _media_errors() -> dict[str, type[MediaError]]:
    found: dict[str, type[MediaError]] = {}
    todo: list[type[MediaError]] = [MediaError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


@struct
@dataclass(frozen=True, slots=True)
class ErrorInfo(Struct):
    """A ``MediaError`` raised in a worker, re-raised as the same class by the pool."""

    kind: str = field(metadata={"doc": "the `sfu.errors.MediaError` subclass name"})
    code: str = field(metadata={"doc": "its stable code"})
    message: str = field(metadata={"doc": "what went wrong, for the client"})

    @classmethod
    def of(cls, exc: MediaError) -> ErrorInfo:
        return cls(type(exc).__name__, exc.code, exc.message)

    def exception(self) -> MediaError:
        """The same subclass (plain MediaError for a name this side does not know)."""
        kind = _media_errors().get(self.kind, MediaError)
        try:
            exc = kind(self.message)
        except TypeError:
            exc = MediaError(self.message)
        exc.code = self.code
        return exc


# --- publisher's process -> worker --------------------------------------------------------------

TO = Direction.TO_WORKER
FROM = Direction.FROM_WORKER


@message
@dataclass(frozen=True, slots=True)
class ProducerOpen(WorkerMessage):
    """Create the mirror of a producer; its packets follow on the media socket."""

    op: ClassVar[str] = "producer"
    direction: ClassVar[Direction] = TO
    key: int = field(metadata={"doc": "the producer's key, the media prefix of its packets"})
    kind: str = field(metadata={"doc": "`audio` or `video`"})
    codec: Codec = field(metadata={"doc": "the producer's codec"})
    ssrc: int = field(metadata={"doc": "the canonical SSRC viewers receive"})
    publisher: str = field(metadata={"doc": "the publisher leg's id"})
    slot: int = field(metadata={"doc": "the publisher's slot in the room (0 = anchor)"})
    identity: str = field(metadata={"doc": "the publisher's identity"})


@message
@dataclass(frozen=True, slots=True)
class ProducerClosed(WorkerMessage):
    """Drop the mirror (the producer ended, or none of this worker's viewers watch it)."""

    op: ClassVar[str] = "producer_closed"
    direction: ClassVar[Direction] = TO
    key: int = field(metadata={"doc": "the producer's key"})


@message
@dataclass(frozen=True, slots=True)
class ProducersAdded(WorkerMessage):
    """A co-host went live: the worker's viewers of the room start receiving these mirrors."""

    op: ClassVar[str] = "producers_added"
    direction: ClassVar[Direction] = TO
    room: str = field(metadata={"doc": "the room"})
    keys: list[int] = field(metadata={"doc": "the new producers' keys (announced before)"})


@message
@dataclass(frozen=True, slots=True)
class SenderReport(WorkerMessage):
    """The publisher's NTP/RTP pair for a producer, once a second, for viewers' sender reports."""

    op: ClassVar[str] = "sr"
    direction: ClassVar[Direction] = TO
    key: int = field(metadata={"doc": "the producer's key"})
    ntp: int = field(metadata={"doc": "64-bit NTP timestamp"})
    rtp: int = field(metadata={"doc": "the matching RTP timestamp"})


@message
@dataclass(frozen=True, slots=True)
class PlayReply(WorkerMessage):
    """The answer to `play`: the new leg and its SDP, or the error that refused it."""

    op: ClassVar[str] = "play_reply"
    direction: ClassVar[Direction] = Direction.REPLY
    leg: str = field(default="", metadata={"doc": "the viewer leg's id"})
    sdp: str = field(default="", metadata={"doc": "the SDP answer"})
    error: ErrorInfo | None = field(default=None, metadata={"doc": "why the offer was refused"})


@message
@dataclass(frozen=True, slots=True)
class Play(WorkerMessage):
    """Open a viewer leg for a WHEP (or /ws) offer; replied to with `play_reply`."""

    op: ClassVar[str] = "play"
    direction: ClassVar[Direction] = TO
    reply_type: ClassVar[type[WorkerMessage] | None] = PlayReply
    room: str = field(metadata={"doc": "the room"})
    identity: str = field(metadata={"doc": "the viewer's identity"})
    offer: str = field(metadata={"doc": "the client's SDP offer"})
    layout: Layout = field(metadata={"doc": "what the viewer negotiates against"})
    producers: list[int] = field(metadata={"doc": "producers to watch (announced)"})
    events: bool = field(metadata={"doc": "whether the viewer may open an `events` data channel"})


@message
@dataclass(frozen=True, slots=True)
class CloseLegReply(WorkerMessage):
    """The answer to `close_leg`."""

    op: ClassVar[str] = "close_leg_reply"
    direction: ClassVar[Direction] = Direction.REPLY
    closed: bool = field(metadata={"doc": "false if the worker had no such leg"})


@message
@dataclass(frozen=True, slots=True)
class CloseLeg(WorkerMessage):
    """Close a viewer leg (DELETE, kick, room closed); replied to with `close_leg_reply`."""

    op: ClassVar[str] = "close_leg"
    direction: ClassVar[Direction] = TO
    reply_type: ClassVar[type[WorkerMessage] | None] = CloseLegReply
    leg: str = field(metadata={"doc": "the viewer leg's id"})


@message
@dataclass(frozen=True, slots=True)
class RoomEvent(WorkerMessage):
    """A room event, once per worker with `events` channels in the room."""

    op: ClassVar[str] = "event"
    direction: ClassVar[Direction] = TO
    room: str = field(metadata={"doc": "the room"})
    packed: bytes = field(metadata={"doc": "the msgpack event, sent as it is"})


@message
@dataclass(frozen=True, slots=True)
class ToLeg(WorkerMessage):
    """A message for one participant only: its join state, or a reply to what it sent."""

    op: ClassVar[str] = "to_leg"
    direction: ClassVar[Direction] = TO
    leg: str = field(metadata={"doc": "the viewer leg's id"})
    packed: bytes = field(metadata={"doc": "the msgpack message"})


@message
@dataclass(frozen=True, slots=True)
class EventsReady(WorkerMessage):
    """The leg's join state went out: release the room events held for it."""

    op: ClassVar[str] = "events_ready"
    direction: ClassVar[Direction] = TO
    leg: str = field(metadata={"doc": "the viewer leg's id"})


@message
@dataclass(frozen=True, slots=True)
class Shutdown(WorkerMessage):
    """Close every leg and exit."""

    op: ClassVar[str] = "shutdown"
    direction: ClassVar[Direction] = TO


# --- worker -> publisher's process --------------------------------------------------------------


@message
@dataclass(frozen=True, slots=True)
class Ready(WorkerMessage):
    """The worker's loop runs and its channels are read."""

    op: ClassVar[str] = "ready"
    direction: ClassVar[Direction] = FROM
    pid: int = field(metadata={"doc": "the worker's process id"})


@message
@dataclass(frozen=True, slots=True)
class KeyframeRequest(WorkerMessage):
    """A viewer asked for a keyframe (PLI/FIR, or a join): the real producer's throttle decides."""

    op: ClassVar[str] = "keyframe"
    direction: ClassVar[Direction] = FROM
    key: int = field(metadata={"doc": "the producer's key"})


@message
@dataclass(frozen=True, slots=True)
class LegClosed(WorkerMessage):
    """A viewer leg ended (closed, failed, or its ICE consent expired)."""

    op: ClassVar[str] = "leg_closed"
    direction: ClassVar[Direction] = FROM
    leg: str = field(metadata={"doc": "the viewer leg's id"})


@message
@dataclass(frozen=True, slots=True)
class LegConnected(WorkerMessage):
    """A viewer leg's ICE and DTLS are up: it no longer counts as a pending session."""

    op: ClassVar[str] = "leg_connected"
    direction: ClassVar[Direction] = FROM
    leg: str = field(metadata={"doc": "the viewer leg's id"})


@message
@dataclass(frozen=True, slots=True)
class Stats(WorkerMessage):
    """Once a second: the worker's counters, summed into the node's /metrics."""

    op: ClassVar[str] = "stats"
    direction: ClassVar[Direction] = FROM
    counters: dict[str, dict[int, int]] = field(metadata={"doc": "name -> producer key -> n"})
    viewers: int = field(metadata={"doc": "viewer legs in the worker"})
    bad_messages: dict[str, int] = field(metadata={"doc": "refused control messages by reason"})


@message
@dataclass(frozen=True, slots=True)
class EventsOpen(WorkerMessage):
    """A viewer opened its `events` data channel: send its join state, then room events."""

    op: ClassVar[str] = "events_open"
    direction: ClassVar[Direction] = FROM
    leg: str = field(metadata={"doc": "the viewer leg's id"})


@message
@dataclass(frozen=True, slots=True)
class ClientEvent(WorkerMessage):
    """What a participant sent on its `events` channel, for the control plane's handler."""

    op: ClassVar[str] = "client_event"
    direction: ClassVar[Direction] = FROM
    leg: str = field(metadata={"doc": "the viewer leg's id"})
    raw: bytes = field(metadata={"doc": "the client's message, unparsed"})


@message
@dataclass(frozen=True, slots=True)
class EventsClosed(WorkerMessage):
    """A viewer's `events` channel closed."""

    op: ClassVar[str] = "events_closed"
    direction: ClassVar[Direction] = FROM
    leg: str = field(metadata={"doc": "the viewer leg's id"})
