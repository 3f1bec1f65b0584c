"""Room events and control topics: one ``Bus`` interface, a memory and a Redis backend."""

from __future__ import annotations

from signaling.bus.base import Bus, Event, Subscription
from signaling.bus.memory import MemoryBus

__all__ = ["Bus", "Event", "MemoryBus", "Subscription"]
