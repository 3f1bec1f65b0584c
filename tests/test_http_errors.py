"""The media plane's errors at the HTTP doors: one status per class, the JSON body every client
already parses, and the same code on ``/ws``."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from sfu import errors
from sfu.errors import MediaError
from sfu.http_errors import HTTP_STATUS, api_error, http_status, media_errors
from signaling.http_errors import error_middleware

# what the doors answered before the media plane had errors of its own
LEGACY = {
    errors.BadOffer: (400, "malformed_sdp"),
    errors.OfferTooLarge: (413, "sdp_too_large"),
    errors.NegotiationFailed: (400, "negotiation_failed"),
    errors.UnsupportedCodec: (400, "unsupported_codec"),
    errors.CodecMismatch: (400, "codec_mismatch"),
    errors.BadRoom: (400, "bad_room"),
    errors.NotLive: (404, "not_live"),
    errors.PublisherExists: (409, "publisher_exists"),
    errors.RoomFull: (409, "room_full"),
    errors.NoAnchor: (403, "no_anchor"),
    errors.NotInvited: (403, "not_invited"),
    errors.SessionNotFound: (404, "not_found"),
    errors.RoomNotFound: (404, "not_found"),
    errors.NoWorkers: (503, "no_workers"),
}


def _subclasses(cls: type[MediaError]) -> list[type[MediaError]]:
    found, todo = [], [cls]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(current.__subclasses__())
    return found


@pytest.mark.parametrize("cls", sorted(LEGACY, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_each_error_keeps_its_status_and_code(cls: type[MediaError]) -> None:
    status, code = LEGACY[cls]
    exc = cls("what went wrong")
    assert (http_status(exc), exc.code) == (status, code)
    assert HTTP_STATUS[cls] == status, "listed in the table, not inherited"


def test_every_media_error_has_a_client_error_or_unavailable_status() -> None:
    for cls in _subclasses(MediaError):
        assert 400 <= http_status(cls("x")) < 600, cls.__name__


def test_an_unlisted_subclass_answers_with_its_nearest_listed_base() -> None:
    class TooManyTracks(errors.BadOffer):
        code = "too_many_tracks"

    exc = TooManyTracks("seven video sections")
    assert http_status(exc) == 400
    assert api_error(exc).code == "too_many_tracks"


def test_a_code_given_at_the_raise_site_reaches_the_client() -> None:
    error = api_error(errors.BadOffer("video section is recvonly", "wrong_direction"))
    assert (error.status, error.code, error.message) == (
        400, "wrong_direction", "video section is recvonly")


async def test_a_wrapped_handler_answers_the_json_body() -> None:
    @media_errors
    async def handler(request: web.Request) -> web.StreamResponse:
        raise errors.RoomFull("room 'r' has its 4 publishers")

    response = await error_middleware(make_mocked_request("POST", "/whip/r"), handler)
    assert isinstance(response, web.Response) and response.text is not None
    assert response.status == 409
    assert response.content_type == "application/json"
    assert json.loads(response.text) == {
        "error": {"code": "room_full", "message": "room 'r' has its 4 publishers"}}


async def test_a_wrapped_handler_lets_other_errors_through() -> None:
    @media_errors
    async def handler(request: web.Request) -> web.StreamResponse:
        raise ValueError("not a media error")

    with pytest.raises(ValueError):
        await handler(make_mocked_request("GET", "/live/r.flv"))
