"""Admission of WebRTC sessions on a node: how many one identity or one client address may hold,
and how many may be answered but not yet connected.

An offer costs the node before any media flows (a peer connection, its sockets, DTLS, an ICE
agent for up to ``sfu.peer.CONNECT_TIMEOUT_S``), so one token or one address could otherwise
exhaust the node's file descriptors and event loop for everyone. The node takes a ``Ticket``
before it makes anything for a session, synchronously (concurrent offers cannot all slip through
while one is negotiated), binds it to the session and frees it when the session ends or its
negotiation fails.
Refusals raise ``TooManySessions`` / ``TooManyPending`` and are counted by reason for /metrics.

Nothing here runs per packet: a ticket is taken once per offer and freed once per session.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from sfu import peer
from sfu.errors import TooManyPending, TooManySessions
from sfu.session import Session
from sfu.settings import ADMISSION_RETRY_AFTER_S, NodeSettings

REASONS = ("sessions_per_identity", "sessions_per_address", "pending_per_identity",
           "pending_per_node")
"""The reasons a session is refused, as /metrics labels them."""

DOORS = ("whip", "whep")
"""Publish (WHIP, or its /ws twin) and play (WHEP, or its /ws twin), as /metrics labels them."""


@dataclass(eq=False)
class Ticket:
    """One admitted session (or one being negotiated) and what it counts against."""

    room: str
    identity: str
    address: str | None
    admitted_at: float = field(default_factory=time.monotonic)
    session: Session | None = None

    def pending(self, now: float) -> bool:
        """Answered (or being answered) but not yet connected (``connected_at``: a leg of this
        process sets it, a worker's viewer when the worker says ``leg_connected``), and not yet
        timed out (an unconnected leg closes then; its close frees the ticket)."""
        connected_at = getattr(self.session, "connected_at", None)
        return connected_at is None and now - self.admitted_at < peer.CONNECT_TIMEOUT_S


class Admission:
    """The node's session limits (``NodeSettings.max_*``) and what they currently count."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.refused: Counter[tuple[str, str]] = Counter()
        """Refusals by (door, reason)."""
        self._tickets: dict[int, Ticket] = {}
        self._by_session: dict[str, Ticket] = {}
        self._per_identity: Counter[tuple[str, str]] = Counter()
        self._per_address: Counter[str] = Counter()
        self._pending: set[Ticket] = set()

    def admit(self, room: str, identity: str, address: str | None, door: str) -> Ticket:
        """A ticket for a new session at ``door`` (one of ``DOORS``), or ``TooManySessions`` /
        ``TooManyPending``."""
        refusal = self._refusal(room, identity, address)
        if refusal is not None:
            reason, error = refusal
            self.refused[(door, reason)] += 1
            raise error
        ticket = Ticket(room, identity, address)
        self._tickets[id(ticket)] = ticket
        self._per_identity[(room, identity)] += 1
        if address is not None:
            self._per_address[address] += 1
        self._pending.add(ticket)
        return ticket

    def bind(self, ticket: Ticket, session: Session) -> None:
        """``session`` is the one ``ticket`` admitted: it is freed when that session ends."""
        if id(ticket) in self._tickets:
            ticket.session = session
            self._by_session[session.id] = ticket

    def release(self, ticket: Ticket) -> None:
        """Free ``ticket`` (its negotiation failed, or its session ended); safe to repeat."""
        if self._tickets.pop(id(ticket), None) is None:
            return
        if ticket.session is not None:
            self._by_session.pop(ticket.session.id, None)
        self._pending.discard(ticket)
        key = (ticket.room, ticket.identity)
        self._per_identity[key] -= 1
        if self._per_identity[key] <= 0:
            del self._per_identity[key]
        if ticket.address is not None:
            self._per_address[ticket.address] -= 1
            if self._per_address[ticket.address] <= 0:
                del self._per_address[ticket.address]

    def session_ended(self, session_id: str) -> None:
        ticket = self._by_session.get(session_id)
        if ticket is not None:
            self.release(ticket)

    def pending(self) -> int:
        """Sessions answered (or being answered) and not yet connected."""
        self._prune_pending()
        return len(self._pending)

    def admitted(self) -> int:
        return len(self._tickets)

    def _prune_pending(self) -> None:
        """Drop connected or timed-out tickets from the pending set: bounded by its cap."""
        now = time.monotonic()
        for ticket in [t for t in self._pending if not t.pending(now)]:
            self._pending.discard(ticket)

    def _refusal(self, room: str, identity: str, address: str | None
                 ) -> tuple[str, TooManySessions] | None:
        """Which limit a new session would pass, and the error that says so; None: none. A
        limit of 0 is no limit (a load test from one machine)."""
        s, retry = self.settings, ADMISSION_RETRY_AFTER_S
        if 0 < s.max_sessions_per_identity <= self._per_identity[(room, identity)]:
            return "sessions_per_identity", TooManySessions(
                f"{identity!r} already holds {s.max_sessions_per_identity} sessions in room "
                f"{room!r} on this node", retry)
        if address is not None and 0 < s.max_sessions_per_address <= self._per_address[address]:
            return "sessions_per_address", TooManySessions(
                f"this address already holds {s.max_sessions_per_address} sessions on this node",
                retry)
        self._prune_pending()
        if 0 < s.max_pending_per_identity <= sum(1 for t in self._pending
                                                 if t.identity == identity):
            return "pending_per_identity", TooManyPending(
                f"{identity!r} has {s.max_pending_per_identity} sessions not yet connected; "
                "retry once one connects", retry)
        if 0 < s.max_pending_sessions <= len(self._pending):
            return "pending_per_node", TooManyPending(
                f"this node has {s.max_pending_sessions} sessions not yet connected; retry",
                retry)
        return None
