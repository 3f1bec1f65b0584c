"""One error type for every refused live action, usable by both the channel and REST.

``LiveError`` is an ``ApiError``: over REST the error middleware answers it with its status and
code; over a channel the gateway turns it into an ``error`` event to that client. So a refusal
reads the same whichever way the action came in.
"""

from __future__ import annotations

from signaling.errors import ApiError


class LiveError(ApiError):
    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(status, code, message)


def not_found(message: str, code: str = "not_found") -> LiveError:
    return LiveError(code, message, 404)
