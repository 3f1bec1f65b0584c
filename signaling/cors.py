"""CORS for the HTTP APIs, so pages and tools on another origin can use WHIP, WHEP and REST."""

from __future__ import annotations

from aiohttp import web

from signaling.http_errors import Handler

CORS_PREFIXES = ("/whip/", "/whep/", "/api/", "/live/")
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, Idempotency-Key"
EXPOSE_HEADERS = "Location, Link, ETag, Accept-Post, Accept-Patch"
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"


def _applies(request: web.Request) -> bool:
    return request.path.startswith(CORS_PREFIXES)


def _decorate(response: web.StreamResponse, request: web.Request) -> None:
    response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin", "*")
    response.headers["Vary"] = "Origin"
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS


@web.middleware
async def cors_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Answer preflights and add CORS headers; tokens, not cookies, authorize these APIs."""
    if not _applies(request):
        return await handler(request)
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
        response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "86400"
        if request.path.startswith(("/whip/", "/whep/")):
            response.headers["Accept-Post"] = "application/sdp"
        _decorate(response, request)
        return response
    response = await handler(request)
    if not response.prepared:
        _decorate(response, request)
    return response
