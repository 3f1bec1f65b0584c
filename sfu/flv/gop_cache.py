"""The room's recent FLV tags, shared by every reader: GOP cache and per-reader queue in one.

Each tag is stored once and numbered; a reader is only a cursor into this log, so a new tag
costs the same with one reader or a thousand, and a reader's backlog is "from my cursor to the
end". The GOP cache is the log's tail from the latest keyframe. The log keeps what the
latency budget could still want (plus the current GOP) and forgets the rest; a reader whose
cursor falls off the front is, by definition, over budget and gets skipped.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MAX_LOG_BYTES = 16 << 20  # a publisher that never sends keyframes must not grow memory forever


@dataclass(frozen=True)
class Entry:
    """One FLV tag (or a sequence-header tag glued to the keyframe it belongs to)."""

    data: bytes
    timestamp: int  # ms on the room timeline
    keyframe: bool  # a reader may start here


class TagLog:
    """Numbered recent tags; ``header`` is what a joiner needs before its first tag."""

    def __init__(self, keep_ms: int) -> None:
        self.keep_ms = keep_ms
        self.header = b""  # FLV file header + current sequence headers; b"" until known
        self._entries: list[Entry] = []
        self._base = 0  # number of self._entries[0]
        self._keyframes: list[int] = []  # numbers of keyframe entries still in the log
        self._bytes = 0
        self._newest = 0
        self.appended = 0

    @property
    def start(self) -> int:
        return self._base

    @property
    def end(self) -> int:
        """Number the next entry will get."""
        return self._base + len(self._entries)

    @property
    def newest_timestamp(self) -> int:
        return self._newest

    def append(self, entry: Entry) -> int:
        number = self.end
        self._entries.append(entry)
        self._bytes += len(entry.data)
        self._newest = max(self._newest, entry.timestamp)  # audio may land a little late
        self.appended += 1
        if entry.keyframe:
            self._keyframes.append(number)
        if self._bytes > MAX_LOG_BYTES:
            self.trim(force=True)
        return number

    def timestamp(self, number: int) -> int:
        return self._entries[number - self._base].timestamp

    def latest_keyframe(self) -> int | None:
        return self._keyframes[-1] if self._keyframes else None

    def keyframe_at_or_after(self, number: int) -> int | None:
        i = bisect.bisect_left(self._keyframes, number)
        return self._keyframes[i] if i < len(self._keyframes) else None

    def gop_age_ms(self) -> int | None:
        """How far the GOP cache's keyframe is behind the newest tag; None without one."""
        latest = self.latest_keyframe()
        return None if latest is None else self.newest_timestamp - self.timestamp(latest)

    def data(self, start: int, end: int | None = None) -> list[bytes]:
        """Tag bytes from ``start`` (clamped to what is kept) to ``end`` (default: newest)."""
        first = max(start, self._base) - self._base
        last = len(self._entries) if end is None else end - self._base
        return [e.data for e in self._entries[first:last]]

    def trim(self, force: bool = False) -> None:
        """Forget tags older than ``keep_ms`` before the newest, but never the current GOP.

        ``force`` (over the byte cap) drops everything but the newest tag's GOP if it fits.
        """
        if not self._entries:
            return
        oldest_wanted = self.newest_timestamp - self.keep_ms
        latest = self.latest_keyframe()
        limit = len(self._entries) if latest is None else latest - self._base
        if force:
            limit = len(self._entries) if self._bytes > MAX_LOG_BYTES // 2 else limit
        cut = 0
        while cut < limit and (force or self._entries[cut].timestamp < oldest_wanted):
            cut += 1
        if cut:
            self._bytes -= sum(len(e.data) for e in self._entries[:cut])
            del self._entries[:cut]
            self._base += cut
            k = bisect.bisect_left(self._keyframes, self._base)
            del self._keyframes[:k]

    def clear(self) -> None:
        """Forget every tag (a new stream starts: readers wait for its first keyframe)."""
        self._base = self.end
        self._entries.clear()
        self._keyframes.clear()
        self._bytes = 0
