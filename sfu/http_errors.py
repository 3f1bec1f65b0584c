"""The HTTP doors' side of ``sfu/errors.py``: which status each media error answers with.

WHIP, WHEP and the FLV handler wrap their handlers in ``media_errors``; ``/ws`` (its negotiator)
turns a media error into the same ``ApiError`` and sends its code and message. The table is the
only place where the media plane's errors meet HTTP statuses; the JSON body is ``ApiError``'s.
"""

from __future__ import annotations

import functools

from aiohttp import web

from sfu.errors import (
    BadOffer,
    BadRoom,
    CodecMismatch,
    MediaError,
    NegotiationFailed,
    NoAnchor,
    NotInvited,
    NotLive,
    NoWorkers,
    OfferTooLarge,
    PublisherExists,
    RoomFull,
    RoomNotFound,
    SessionNotFound,
    TooManySections,
    TooManySessions,
    UnsupportedCodec,
)
from signaling.errors import ApiError
from signaling.http_errors import Handler

HTTP_STATUS: dict[type[MediaError], int] = {
    MediaError: 400,
    BadOffer: 400,
    OfferTooLarge: 413,
    NegotiationFailed: 400,
    UnsupportedCodec: 400,
    CodecMismatch: 400,
    BadRoom: 400,
    NotLive: 404,
    PublisherExists: 409,
    RoomFull: 409,
    NoAnchor: 403,
    NotInvited: 403,
    SessionNotFound: 404,
    RoomNotFound: 404,
    NoWorkers: 503,
    TooManySections: 400,
    TooManySessions: 429,
}
"""Status per class; a subclass missing here answers with its nearest listed base's."""


def http_status(exc: MediaError) -> int:
    for cls in type(exc).__mro__:
        status = HTTP_STATUS.get(cls)
        if status is not None:
            return status
    return HTTP_STATUS[MediaError]


def api_error(exc: MediaError) -> ApiError:
    """The client's view of ``exc``: its status, its stable code, its message."""
    return ApiError(http_status(exc), exc.code, exc.message)


def error_response(exc: MediaError) -> web.Response:
    """``exc``'s JSON error, with ``Retry-After`` when the refusal says when to come back
    (``TooManySessions``: ``429``)."""
    response = api_error(exc).to_response()
    if isinstance(exc, TooManySessions):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def media_errors(handler: Handler) -> Handler:
    """Answer a media error raised under ``handler`` as its JSON error."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except MediaError as exc:
            return error_response(exc)

    return wrapped
