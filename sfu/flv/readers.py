"""A room's HTTP-FLV readers and the counters that outlive them, for ``/metrics``: how many
joined, why they left, how often they were skipped ahead, how many bytes they were sent."""

from __future__ import annotations

from typing import Any

from sfu.flv.viewer_queue import FlvReader


class ReaderBook:
    """The readers of one output; a reader that closes moves its counts into the totals."""

    def __init__(self) -> None:
        self.active: set[FlvReader] = set()
        self.joined = 0
        self.closed: dict[str, int] = {}  # close reason -> readers
        self._past_skips = 0
        self._past_bytes = 0
        self._identities: dict[FlvReader, str] = {}  # whose token each reader came with

    def add(self, reader: FlvReader, identity: str = "") -> None:
        self.active.add(reader)
        self.joined += 1
        if identity:
            self._identities[reader] = identity

    def of_identity(self, identity: str) -> list[FlvReader]:
        """The open readers of ``identity`` (a ban or kick ends them)."""
        return [r for r, who in self._identities.items() if who == identity and not r.closed]

    def remove(self, reader: FlvReader) -> None:
        self._identities.pop(reader, None)
        if reader not in self.active:
            return
        self.active.discard(reader)
        self._past_skips += reader.skips
        self._past_bytes += reader.bytes_sent
        reason = reader.close_reason or "closed"
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def stats(self) -> dict[str, Any]:
        readers = list(self.active)
        return {
            "readers": len(readers),
            "skips": sum(r.skips for r in readers),
            "readers_total": self.joined,
            "closed_readers": dict(self.closed),
            "skips_total": self._past_skips + sum(r.skips for r in readers),
            "bytes_sent_total": self._past_bytes + sum(r.bytes_sent for r in readers),
        }
