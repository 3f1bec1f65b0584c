"""A single background thread per room for the codec work FLV needs (Opus->AAC, VP8->H.264).

PyAV releases the GIL inside libavcodec, so decoding and encoding on a thread keeps the event
loop (and every other room's forwarding) free; jobs run in order and their results come back
to the loop in order. ``submit`` is synchronous and cheap: it is called from ``forward``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger("shopcast.sfu.flv")

In = TypeVar("In")
Out = TypeVar("Out")

MAX_BACKLOG = 500  # jobs; a stalled codec must not grow memory without bound


class OrderedWorker(Generic[In, Out]):
    """Runs ``process`` on a thread for each submitted item; ``deliver`` gets the results."""

    def __init__(
        self,
        name: str,
        process: Callable[[In], list[Out]],
        deliver: Callable[[list[Out]], None],
    ) -> None:
        self._process = process
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._jobs: deque[In] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: In) -> None:
        with self._wake:
            if len(self._jobs) >= MAX_BACKLOG:
                self._jobs.popleft()
                self.dropped += 1
            self._jobs.append(item)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._jobs.clear()
            self._wake.notify()

    def _run(self) -> None:
        import time

        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                batch = list(self._jobs)
                self._jobs.clear()
            started = time.perf_counter()
            results: list[Out] = []
            for item in batch:
                try:
                    results.extend(self._process(item))
                except Exception:
                    logger.exception("FLV codec job failed")
            self.busy_s += time.perf_counter() - started
            if results and not self._closed:
                try:
                    self._loop.call_soon_threadsafe(self._deliver_checked, results)
                except RuntimeError:
                    return  # the loop is gone

    def _deliver_checked(self, results: list[Out]) -> None:
        if not self._closed:
            self._deliver(results)
