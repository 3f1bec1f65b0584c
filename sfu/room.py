"""A Room on this node: its publishers (anchor and co-hosts) and its viewers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiortc import RTCRtpCodecParameters

from sfu.producer import Producer, TrackSlot
from sfu.room_layout import KINDS, RoomLayout
from sfu.session import PublisherSession, Session, ViewerSession


@dataclass
class Room:
    """Publishers take numbered slots (0 = the anchor, then co-hosts); a slot's SSRCs outlive
    its publishers, so viewers negotiate every slot once and co-hosts come and go freely."""

    name: str
    max_publishers: int = 1
    publishers: dict[str, PublisherSession] = field(default_factory=dict)
    viewers: dict[str, ViewerSession] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    slots: list[dict[str, TrackSlot]] = field(init=False)

    def __post_init__(self) -> None:
        self.slots = [{kind: TrackSlot() for kind in KINDS} for _ in range(self.max_publishers)]

    def free_slot(self) -> int | None:
        taken = {p.slot for p in self.publishers.values() if not p.closed}
        return next((i for i in range(self.max_publishers) if i not in taken), None)

    def codecs(self) -> dict[str, RTCRtpCodecParameters]:
        """The room's codec per kind: the first live publisher's (the anchor's, normally)."""
        found: dict[str, RTCRtpCodecParameters] = {}
        for producer in self.producers():
            found.setdefault(producer.kind, producer.codec)
        return found

    def layout(self) -> RoomLayout:
        return RoomLayout(
            ssrcs=[{kind: slot[kind].ssrc for kind in KINDS} for slot in self.slots],
            codecs=self.codecs(),
        )

    @property
    def live(self) -> bool:
        return any(p.live for p in self.publishers.values())

    @property
    def empty(self) -> bool:
        return not self.publishers and not self.viewers

    def producers(self) -> list[Producer]:
        """Live tracks, by slot (the anchor's first)."""
        return [
            producer
            for publisher in sorted(self.publishers.values(), key=lambda p: p.slot)
            if publisher.live
            for producer in publisher.producers
            if not producer.closed
        ]

    def remove_publisher(self, publisher: PublisherSession) -> None:
        self.publishers.pop(publisher.id, None)
        for viewer in list(self.viewers.values()):
            for producer in publisher.producers:
                viewer.on_producer_closed(producer)

    def remove_viewer(self, viewer: Session) -> None:
        self.viewers.pop(viewer.id, None)
