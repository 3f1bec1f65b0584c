"""JSON errors: every failure a client sees is ``{"error": {"code": ..., "message": ...}}``.

``ApiError`` is plain data (a status, a stable code, a message) and this module imports no web
framework, so code that only raises or carries one (``Claims``, the media plane's worker
processes) loads no HTTP code. The middleware that renders every failure is in
``signaling/http_errors.py``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, *, retry_after_s: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # > 0: sent as ``Retry-After`` (429, 503)

    def body(self) -> str:
        """The JSON body every door sends: ``{"error": {"code": ..., "message": ...}}``."""
        return json.dumps({"error": {"code": self.code, "message": self.message}})

    def to_response(self) -> web.Response:
        # Imported here, not at the top: only a process that serves HTTP renders a response,
        # and it has aiohttp.web loaded already.
        from aiohttp import web

        response = web.Response(status=self.status, text=self.body(),
                                content_type="application/json")
        if self.retry_after_s > 0:
            response.headers["Retry-After"] = str(self.retry_after_s)
        return response


class StoreUnavailable(ApiError):
    """The shared store (Redis) cannot be reached right now (restarting, failing over, loading
    its data): ``503 store_unavailable`` with ``Retry-After``. Raised by the Redis backends for
    any call that failed for that reason, so every door that touches the store answers the same
    way and nothing above them needs to know about Redis."""

    RETRY_AFTER_S = 2

    def __init__(self, message: str = "the room store is unavailable; retry shortly") -> None:
        super().__init__(503, "store_unavailable", message, retry_after_s=self.RETRY_AFTER_S)


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def unauthorized(message: str, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message)


def forbidden(message: str, code: str = "forbidden") -> ApiError:
    return ApiError(403, code, message)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    return ApiError(409, code, message)
