"""Waiting for something observable in a test, with a bound and a message that says what."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], limit_s: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail with ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what}")
        await asyncio.sleep(0.05)
