"""What one connection may ask the server to send again.

A ``resume`` costs its client 20 bytes and the server up to the room's whole history, so every
transport that serves it (the ``events`` data channel, ``/ws/events``, ``/ws``) gives each
connection one ``ResumeBudget``: a token bucket of resumes (``burst``, refilled at ``per_s``),
checked before any store or history read, and caps on what one resume sends again
(``max_events``, ``max_bytes``). Past the bucket the client gets ``error`` ``resume_limited``;
past a cap it gets a fresh ``state`` instead of the events (one snapshot, bounded by itself).
The gateway counts both by reason for ``/metrics``. Plain data and the clock: a worker process
imports this through the event bridge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ResumeLimits:
    """Per connection: ``burst`` resumes at once, then ``per_s``; per resume, at most
    ``max_events`` events and ``max_bytes`` bytes re-sent (else a fresh ``state``)."""

    burst: int = 4
    per_s: float = 0.5
    max_events: int = 200
    max_bytes: int = 128 * 1024

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_s <= 0 or self.max_events < 1 or self.max_bytes < 1:
            raise ValueError("resume limits must be positive")


class ResumeBudget:
    """One connection's token bucket of resumes."""

    __slots__ = ("_at", "_clock", "_tokens", "limits")

    def __init__(self, limits: ResumeLimits,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._tokens = float(limits.burst)
        self._at = clock()

    def take(self) -> float:
        """Spend one resume: 0.0 when allowed, else the seconds until the next one is."""
        now = self._clock()
        limits = self.limits
        self._tokens = min(float(limits.burst), self._tokens + (now - self._at) * limits.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / limits.per_s
