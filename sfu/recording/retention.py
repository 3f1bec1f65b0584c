"""Retention: recordings older than ``--record-retention-days`` go, files and index entry.

Run at start and hourly by every recording node (deletions are idempotent, so several nodes
sharing a record directory may all run it). A recording's age counts from its end. Directories
of the record dir that the index does not know (a process killed before its first index
write, an index on another store) go by their modification time.
"""

from __future__ import annotations

import logging
import shutil
import time

from signaling.recordings_index import RecordingsIndex, valid_recording_id

logger = logging.getLogger("shopcast.sfu.recording")

DAY_S = 86400


async def sweep(index: RecordingsIndex, days: float, active: set[str],
                now: float | None = None) -> int:
    """Remove what is past retention (``days`` 0: keep everything); return how many went."""
    if days <= 0:
        return 0
    now = time.time() if now is None else now
    cutoff = now - days * DAY_S
    removed = 0
    known: set[str] = set()
    for meta in await index.every():
        known.add(meta.id)
        if meta.id not in active and meta.started_at + meta.duration_s < cutoff:
            await index.remove(meta)
            removed += 1
    if index.directory.is_dir():
        for folder in index.directory.iterdir():
            name = folder.name
            if (valid_recording_id(name) and name not in known and name not in active
                    and folder.is_dir() and folder.stat().st_mtime < cutoff):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    if removed:
        logger.info("recording retention: %d recordings older than %g days removed", removed,
                    days)
    return removed
