"""The aiohttp side of ``signaling/errors.py``: the handler type and the middleware that turns
every failure into its JSON body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from signaling.errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Turn ApiError and aiohttp's own HTTP errors into JSON bodies; never leak a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return ApiError(exc.status, code, exc.reason).to_response()
