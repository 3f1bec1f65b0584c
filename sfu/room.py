"""A Room on this node: its publishers (anchor and co-hosts) and its viewers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from sfu.producer import Producer
from sfu.publisher import Publisher


class ViewerLeg(Protocol):
    """A viewer session, in this process (Viewer) or in a worker process (RemoteViewer)."""

    id: str
    room: str
    identity: str
    role: str

    async def close(self) -> None: ...

    def on_producer_closed(self, producer: Producer) -> None: ...


@dataclass
class Room:
    name: str
    publishers: dict[str, Publisher] = field(default_factory=dict)
    viewers: dict[str, ViewerLeg] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)

    @property
    def live(self) -> bool:
        return any(p.live for p in self.publishers.values())

    @property
    def empty(self) -> bool:
        return not self.publishers and not self.viewers

    def producers(self) -> list[Producer]:
        """Live tracks, anchor first (publishers keep insertion order)."""
        return [
            producer
            for publisher in self.publishers.values()
            if publisher.live
            for producer in publisher.producers
            if not producer.closed
        ]

    def remove_publisher(self, publisher: Publisher) -> None:
        self.publishers.pop(publisher.id, None)
        for viewer in list(self.viewers.values()):
            for producer in publisher.producers:
                viewer.on_producer_closed(producer)

    def remove_viewer(self, viewer: ViewerLeg) -> None:
        self.viewers.pop(viewer.id, None)
