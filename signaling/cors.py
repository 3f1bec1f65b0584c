"""CORS for the HTTP APIs, so pages and tools on another origin can use WHIP, WHEP and REST.

Which origins may is ``--cors-origins`` (``CORS_KEY`` on the app; ``*``, the default, allows any
and echoes the request's ``Origin``). An origin outside the list gets no CORS headers, so its
scripts cannot read answers, and its preflights are refused with a JSON 403: the browser stops
before the request. An ``OPTIONS`` without ``Origin`` (a tool, not a browser) is answered.
Same-origin pages need no CORS and are never affected. Tokens, not cookies, authorize these
APIs, so CORS guards against reading answers, not against forged requests.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from signaling.errors import forbidden
from signaling.http_errors import Handler

CORS_PREFIXES = ("/whip/", "/whep/", "/api/", "/live/")
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, Idempotency-Key"
EXPOSE_HEADERS = "Location, Link, ETag, Accept-Post, Accept-Patch"
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ANY_ORIGIN = "*"


class CorsPolicy:
    """The allowed origins, compared exactly (scheme://host[:port], no trailing slash)."""

    def __init__(self, origins: Iterable[str] = (ANY_ORIGIN,)) -> None:
        cleaned = {origin.strip().rstrip("/") for origin in origins if origin.strip()}
        self.any = ANY_ORIGIN in cleaned or not cleaned
        self.origins = frozenset(cleaned - {ANY_ORIGIN})

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for ``origin``; None when not allowed."""
        if self.any:
            return origin or ANY_ORIGIN
        if origin is not None and origin in self.origins:
            return origin
        return None


CORS_KEY = web.AppKey("cors", CorsPolicy)
_ANY = CorsPolicy()


def _applies(request: web.Request) -> bool:
    return request.path.startswith(CORS_PREFIXES)


def _decorate(response: web.StreamResponse, allowed: str | None) -> None:
    response.headers["Vary"] = "Origin"
    if allowed is None:
        return
    response.headers["Access-Control-Allow-Origin"] = allowed
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


@web.middleware
async def cors_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Answer preflights and add CORS headers for allowed origins."""
    if not _applies(request):
        return await handler(request)
    origin = request.headers.get("Origin")
    allowed = request.app.get(CORS_KEY, _ANY).allow_origin(origin)
    if request.method == "OPTIONS":
        if allowed is None and origin is not None:  # outside error_middleware: answer here
            return forbidden("this origin may not call the API from a browser "
                             "(--cors-origins)", "origin_not_allowed").to_response()
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "86400"
        if request.path.startswith(("/whip/", "/whep/")):
            response.headers["Accept-Post"] = "application/sdp"
        _decorate(response, allowed)
        return response
    response = await handler(request)
    if not response.prepared:
        _decorate(response, allowed)
    return response
