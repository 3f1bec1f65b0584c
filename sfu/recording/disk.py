"""The recordings' file system calls, on a thread of their own.

The remux runs on the node's event loop, which also forwards every packet; a write that
waits on the disk (a busy local disk, or the network file system a multi-node deployment
shares its record directory on) must not stall it. ``DiskWriter`` takes opens and writes in
order and does them on its thread; what it has not written yet is bounded
(``MAX_QUEUED_BYTES``): past it, or at a write error, ``failed`` says why and the recording
ends rather than grow the process or lose its middle silently.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from pathlib import Path

logger = logging.getLogger("shopcast.sfu.recording")

MAX_QUEUED_BYTES = 64 << 20  # about 15 minutes of a 600 kbit/s room waiting on a stuck disk
_OPEN, _WRITE = 0, 1


class DiskWriter:
    """Opens segment files and writes them, in order, on a daemon thread."""

    def __init__(self, name: str) -> None:
        self.failed = ""  # why the files can no longer be trusted; "" while they can
        self._jobs: queue.SimpleQueue[tuple[int, Path | bytes] | None] = queue.SimpleQueue()
        self._queued = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def open(self, path: Path) -> None:
        """Close the current file (if any) and start ``path`` (its folder made as needed)."""
        self._jobs.put((_OPEN, path))

    def write(self, data: bytes) -> None:
        with self._lock:
            self._queued += len(data)
            over = self._queued > MAX_QUEUED_BYTES
        if over and not self.failed:
            self.failed = "disk_slow"
            logger.warning("recording disk writes %d bytes behind: ending the recording",
                           self._queued)
        if not self.failed:
            self._jobs.put((_WRITE, data))

    def close(self) -> None:
        """No more jobs: the thread ends once the queued ones are done (``join``)."""
        self._jobs.put(None)

    def join(self, timeout_s: float | None = None) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        fd = -1
        while (job := self._jobs.get()) is not None:
            kind, value = job
            try:
                if kind == _OPEN:
                    assert isinstance(value, Path)
                    if fd >= 0:
                        os.close(fd)
                    value.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(value, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
                elif fd >= 0 and not self.failed:
                    assert isinstance(value, bytes)
                    view = memoryview(value)
                    while view:
                        view = view[os.write(fd, view):]
                    with self._lock:
                        self._queued -= len(value)
            except OSError as exc:
                if not self.failed:
                    self.failed = "disk_error"  # a /metrics label: the details go to the log
                    logger.warning("recording write failed: %s", exc)
        if fd >= 0:
            os.close(fd)
