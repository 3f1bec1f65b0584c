"""The two directions between one SFU node and the control plane.

``SessionBridge`` tells the control plane what happens on the node: a session started or
ended, a publisher's tracks went live or away. It is one of ``SfuNode.session_observers`` and
``SfuNode.room_observers`` and only enqueues on the ``SessionReporter`` (never awaits), because the
node's callbacks are synchronous and sit next to the media path. Viewers in worker processes
reach it too: every kind of session arrives as a ``Session`` (``sfu/session.py``).

``NodeMediaControl`` is the control plane's ``MediaControl`` over this node: REST close, kick
and mute end sessions or stop a producer here (a kick or ban also ends the identity's HTTP-FLV
responses, which are not sessions) (directly in ``shopcast serve``, through the bus's
``media`` topic when the node is its own process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from sfu.flv.manager import FlvManager
from sfu.node import SfuNode
from sfu.producer import Producer
from sfu.room import Room
from sfu.session import PublisherSession, Session
from signaling.sessions import SessionReporter
from signaling.store import NodeRecord, Transport

logger = logging.getLogger("shopcast.sfu.media_control")


def track_sids(publisher: PublisherSession) -> list[tuple[str, Producer]]:
    """Stable track ids: ``<publisher id>:<kind>``, numbered when a kind repeats
    (``:video``, ``:video2``), so the REST API can address one track across processes."""
    seen: dict[str, int] = {}
    out = []
    for producer in publisher.producers:
        seen[producer.kind] = seen.get(producer.kind, 0) + 1
        suffix = "" if seen[producer.kind] == 1 else str(seen[producer.kind])
        out.append((f"{publisher.id}:{producer.kind}{suffix}", producer))
    return out


class SessionBridge:
    """Reports the node's sessions and tracks to the control plane, in order per session."""

    def __init__(self, reporter: SessionReporter) -> None:
        self.reporter = reporter
        self._joined: set[str] = set()

    # --- SfuNode.session_observers (SessionObserver) ----------------------------------------

    def session_started(self, session: Session, name: str = "") -> None:
        self._joined.add(session.id)
        self.reporter.joined(session.room, session.id, session.identity,
                             Transport(session.transport), role=session.role, name=name,
                             slot=getattr(session, "slot", -1))

    def session_ended(self, session: Session) -> None:
        """Only sessions that were reported: a failed negotiation never joined, never leaves."""
        if session.id in self._joined:
            self._joined.discard(session.id)
            self.reporter.left(session.room, session.id)

    # --- SfuNode.room_observers (RoomObserver) ---------------------------------------------

    def publisher_live(self, room: Room, publisher: PublisherSession) -> None:
        for sid, producer in track_sids(publisher):
            self.reporter.track_published(room.name, publisher.id, sid, producer.kind,
                                          producer.codec.mimeType.split("/")[-1])

    def publisher_left(self, room: Room, publisher: PublisherSession) -> None:
        for sid, _ in track_sids(publisher):
            self.reporter.track_unpublished(room.name, publisher.id, sid)


class NodeMediaControl:
    """``MediaControl`` for the sessions of one node; sids are session ids, track sids as
    above."""

    def __init__(self, node: SfuNode, flv: FlvManager | None = None) -> None:
        self.node = node
        self.flv = flv

    async def end_room(self, room: str) -> int:
        sessions = [s for s in list(self.node.sessions.values()) if s.room == room]
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        if sessions:
            logger.info("room %s ended by the control plane: %d sessions", room, len(sessions))
        return len(sessions)

    async def end_session(self, room: str, sid: str) -> bool:
        session = self.node.sessions.get(sid)
        if session is None or session.room != room:
            return False
        await session.close()
        return True

    async def end_identity(self, room: str, identity: str) -> int:
        """End what ``identity`` has in ``room`` that is not a reported session: its HTTP-FLV
        responses (a ban or kick ends them too). Return how many."""
        output = self.flv.outputs.get(room) if self.flv is not None else None
        ended = output.end_identity(identity) if output is not None else 0
        if ended:
            logger.info("room %s: %d FLV responses of %s ended", room, ended, identity)
        return ended

    async def end_publishers(self, room: str) -> int:
        """End the room's publishers here (a forbid): WHIP anchor, co-hosts, RTMP encoder."""
        live_room = self.node.rooms.get(room)
        publishers = list(live_room.publishers.values()) if live_room is not None else []
        await asyncio.gather(*(p.close() for p in publishers), return_exceptions=True)
        if publishers:
            logger.info("room %s: %d publishers ended (forbidden)", room, len(publishers))
        return len(publishers)

    async def mute_track(self, room: str, sid: str, track_sid: str, muted: bool) -> bool:
        live_room = self.node.rooms.get(room)
        publisher = live_room.publishers.get(sid) if live_room is not None else None
        if publisher is None:
            return False
        for candidate, producer in track_sids(publisher):
            if candidate == track_sid:
                producer.set_muted(muted)
                logger.info("track %s %s", track_sid, "muted" if muted else "unmuted")
                return True
        return False


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process plus its workers (Linux /proc; workers skipped elsewhere)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total


class LoadMeter:
    """Samples the node's load for its heartbeat (``NodeAgent.sample``), about once a second.

    ``cpu`` is cores in use by the node and its workers since the last sample; ``bitrate_bps``
    is what the node moves: each room's incoming media once, plus once per WebRTC viewer.
    """

    def __init__(self, node: SfuNode, node_id: str, url: str, max_viewers: int = 0) -> None:
        self.node = node
        self.node_id = node_id
        self.url = url
        self.max_viewers = max_viewers
        self._at = time.monotonic()
        self._cpu = _cpu_seconds(self._worker_pids())
        self._octets: dict[int, int] = {}

    def _worker_pids(self) -> list[int]:
        pool = self.node.workers
        return [w.process.pid for w in pool.workers if w.alive] if pool is not None else []

    def __call__(self) -> NodeRecord:
        now = time.monotonic()
        elapsed = max(now - self._at, 1e-3)
        cpu = _cpu_seconds(self._worker_pids())
        cores = max(cpu - self._cpu, 0.0) / elapsed
        self._at, self._cpu = now, cpu
        octets: dict[int, int] = {}
        bits = 0.0
        for room in self.node.rooms.values():
            for producer in room.producers():
                octets[producer.key] = producer.octets
                grown = producer.octets - self._octets.get(producer.key, producer.octets)
                bits += max(grown, 0) * 8 / elapsed * (1 + len(room.viewers))
        self._octets = octets
        roles = [session.role for session in self.node.sessions.values()]
        return NodeRecord(
            id=self.node_id, url=self.url, publishers=roles.count("publisher"),
            viewers=roles.count("viewer"), cpu=round(cores, 3), bitrate_bps=int(bits),
            max_viewers=self.max_viewers,
        )
