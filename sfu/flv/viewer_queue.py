"""One FLV reader: a cursor into the room's tag log, a latency budget and a stuck timer.

Why a reader never falls behind without bound (SRS issue #606 drifts from 1.2 s to 39 s):
- the backlog is measured in media time: newest tag minus the oldest tag whose bytes the
  client has not received yet, counting bytes still in the transport and in the kernel's
  send queue (``unsent``, from TIOCOUTQ), so socket buffers cannot hide a lag;
- bytes go to the socket only when the transport's own buffer is empty, so a slow reader's
  backlog stays in the shared log where skipping it costs nothing;
- over the budget, the reader skips to the newest keyframe within budget, or sends nothing
  until the next keyframe arrives (the publisher is asked for one);
- a reader that has taken no byte for the stuck timeout is aborted.
Writes are coalesced: one ``writelines`` (one send syscall) per flush tick with everything
pending, so a reader costs about 1000/flush_ms syscalls per second, whatever the tag rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sfu.flv.gop_cache import TagLog


class Transport(Protocol):
    """The part of ``asyncio.Transport`` a reader uses."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, data: list[bytes]) -> None: ...

    def get_write_buffer_size(self) -> int: ...

    def is_closing(self) -> bool: ...

    def abort(self) -> None: ...


class FlvReader:
    """Feeds one HTTP-FLV response from the shared log; driven by the room's flush tick."""

    def __init__(
        self,
        log: TagLog,
        transport: Transport,
        *,
        budget_ms: int,
        stuck_timeout_s: float,
        request_keyframe: Callable[[], None],
        on_closed: Callable[[FlvReader], None],
        unsent: Callable[[], int] | None = None,
        chunked: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._transport = transport
        self.budget_ms = budget_ms
        self.stuck_timeout_s = stuck_timeout_s
        self._request_keyframe = request_keyframe
        self._on_closed = on_closed
        self._unsent = unsent
        self._chunked = chunked
        self._clock = clock
        self.cursor: int | None = None  # next entry to send; None: waiting for a keyframe
        self._wait_from = log.end
        self._header_sent = False
        self._in_flight: deque[tuple[int, int]] = deque()  # (bytes_sent after, first ts)
        self._delivered = 0
        self._progress_at = clock()
        self.closed = False
        self.close_reason = ""
        self.started_at = clock()
        self.first_write_at: float | None = None
        self.skips = 0
        self.writes = 0
        self.bytes_sent = 0
        self.max_backlog_ms = 0
        self.joined_from_cache = False

    def join(self) -> None:
        """Start from the GOP cache if its keyframe is within budget, else at the next one."""
        latest = self._log.latest_keyframe()
        age = self._log.gop_age_ms()
        if latest is not None and age is not None and age <= self.budget_ms:
            self.cursor = latest
            self.joined_from_cache = True
        else:
            self._wait_for_keyframe()
        self.flush()

    def _wait_for_keyframe(self) -> None:
        self.cursor = None
        self._wait_from = self._log.end
        self._request_keyframe()

    def _oldest_unsent_ts(self) -> int | None:
        if self._in_flight:
            return self._in_flight[0][1]
        if self.cursor is None or self.cursor >= self._log.end:
            return None
        if self.cursor < self._log.start:
            return -self.budget_ms - 1  # its tags were forgotten: it is far behind
        return self._log.timestamp(self.cursor)

    def backlog_ms(self) -> int:
        """Media time between the newest tag and the oldest one the client has not received."""
        oldest = self._oldest_unsent_ts()
        return 0 if oldest is None else max(0, self._log.newest_timestamp - oldest)

    def _skip(self) -> None:
        """Over budget: jump to the newest keyframe that is within budget, or wait for one."""
        latest = self._log.latest_keyframe()
        if self.cursor is None:
            return  # already waiting for the next keyframe
        if latest is not None and self.cursor is not None and latest == self.cursor:
            return  # already at the newest keyframe: the lag is in flight, not here
        self.skips += 1
        if (
            latest is not None
            and self.cursor is not None
            and latest > self.cursor
            and self._log.newest_timestamp - self._log.timestamp(latest) <= self.budget_ms
        ):
            self.cursor = latest
        else:
            self._wait_for_keyframe()

    def _account(self, now: float) -> int:
        """Bytes not yet taken by the client; drops in-flight records it has taken."""
        pending = self._transport.get_write_buffer_size()
        if self._unsent is not None:
            pending += self._unsent()
        delivered = self.bytes_sent - pending
        if pending == 0 or delivered > self._delivered:
            self._progress_at = now
        self._delivered = delivered
        while self._in_flight and self._in_flight[0][0] <= delivered:
            self._in_flight.popleft()
        return pending

    def flush(self) -> None:
        """Check the reader's health and write everything pending in one go (if it can take it)."""
        if self.closed:
            return
        transport = self._transport
        if transport.is_closing():
            self.close("disconnected")
            return
        now = self._clock()
        self._account(now)
        if now - self._progress_at > self.stuck_timeout_s:
            self.close("stuck")
            return
        backlog = self.backlog_ms()
        self.max_backlog_ms = max(self.max_backlog_ms, backlog)
        if backlog > self.budget_ms:
            self._skip()
        if self.cursor is None:
            found = self._log.keyframe_at_or_after(self._wait_from)
            if found is None:
                return
            self.cursor = found
        if transport.get_write_buffer_size() or not self._log.header:
            return
        first = max(self.cursor, self._log.start)
        if first >= self._log.end and self._header_sent:
            return
        first_ts = self._log.timestamp(first) if first < self._log.end else 0
        parts = self._log.data(first)
        self.cursor = self._log.end
        if not self._header_sent:
            parts.insert(0, self._log.header)
            self._header_sent = True
        self._send(parts, first_ts)

    def _send(self, parts: list[bytes], first_ts: int) -> None:
        size = sum(len(p) for p in parts)
        if self._chunked:
            parts = [b"%x\r\n" % size, *parts, b"\r\n"]
        self._transport.writelines(parts)
        self.writes += 1
        self.bytes_sent += size + (len(parts[0]) + 2 if self._chunked else 0)
        self._in_flight.append((self.bytes_sent, first_ts))
        if self.first_write_at is None:
            self.first_write_at = self._clock()

    def close(self, reason: str) -> None:
        """Stop feeding this reader; a stuck socket is aborted, not drained."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        if reason == "stuck":
            self._transport.abort()
        self._on_closed(self)
