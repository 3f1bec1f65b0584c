"""The media plane's own errors: what went wrong, in media terms, with a stable code.

Media code raises these and knows nothing of HTTP, WebSockets or RTMP. Each door maps them to
its own vocabulary in one place: WHIP/WHEP and the FLV handler to HTTP statuses
(``sfu/http_errors.py``), ``/ws`` to its error messages, the RTMP door to ``NetStream`` statuses.
The ``code`` is the public, machine-readable part of the error and is the same at every door.
"""

from __future__ import annotations

from sfu.settings import ADMISSION_RETRY_AFTER_S
from signaling.room_names import ROOM_NAME_RULE, valid_room_name


class MediaError(Exception):
    """Base of every error the media plane reports to a client."""

    code = "media_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadOffer(MediaError):
    """An SDP offer that is malformed, too large or cannot be answered."""

    code = "malformed_sdp"


class OfferTooLarge(BadOffer):
    code = "sdp_too_large"


class NegotiationFailed(BadOffer):
    """aiortc could not answer an offer that passed our checks."""

    code = "negotiation_failed"


class UnsupportedCodec(MediaError):
    """The offer (or an encoder's stream) has no codec the SFU can forward."""

    code = "unsupported_codec"


class CodecMismatch(MediaError):
    """A co-host offers codecs other than the ones the room's viewers negotiated."""

    code = "codec_mismatch"


class BadRoom(MediaError):
    """A room name outside the rule (``signaling/room_names.py``)."""

    code = "bad_room"


def require_room_name(room: str) -> str:
    """``room`` when it follows the rule every door shares; else ``BadRoom``."""
    if not valid_room_name(room):
        raise BadRoom(ROOM_NAME_RULE)
    return room


class BadQuality(MediaError):
    """A ``?quality=`` other than ``auto``, ``high`` or ``low`` (``sfu/layers.py``)."""

    code = "bad_quality"


class NotLive(MediaError):
    """Playback of a room that has no live publisher on this node."""

    code = "not_live"


class PublisherExists(MediaError):
    """A second publisher without the ``cohost`` grant."""

    code = "publisher_exists"


class RoomFull(MediaError):
    """Every publisher slot of the room is taken."""

    code = "room_full"


class NoAnchor(MediaError):
    """A co-host publish in a room that has no anchor."""

    code = "no_anchor"


class NotInvited(MediaError):
    """A co-host publish without a standing invitation."""

    code = "not_invited"


class SessionNotFound(MediaError):
    """No such session (leg) in the room."""

    code = "not_found"


class RoomNotFound(MediaError):
    """The room does not exist on this node."""

    code = "not_found"


class NoWorkers(MediaError):
    """No media worker process is running to take a viewer."""

    code = "no_workers"


class MalformedMedia(MediaError):
    """An encoder's stream that cannot be parsed (truncated or garbage tags, bad NAL framing)."""

    code = "malformed_media"


class TooManySections(BadOffer):
    """An offer with more media sections than the room's slots need (plus a data channel):
    refused before any peer connection is made, so its size buys no CPU or sockets."""

    code = "too_many_sections"


class TooManySessions(MediaError):
    """A session past a per-identity or per-address limit of the node; the door answers
    ``retry_after_s`` with the refusal (HTTP: ``429`` + ``Retry-After``)."""

    code = "too_many_sessions"

    def __init__(self, message: str, retry_after_s: int = ADMISSION_RETRY_AFTER_S,
                 code: str | None = None) -> None:
        super().__init__(message, code)
        self.retry_after_s = retry_after_s


class TooManyPending(TooManySessions):
    """A session past the limit of answered, not yet connected sessions (per identity or for
    the node)."""

    code = "too_many_pending"
