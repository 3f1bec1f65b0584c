"""What the node calls a session: one participant's media connection to a room.

Every kind of session satisfies ``Session``: a ``PeerLeg`` (a WebRTC peer connection in this
process: a WHIP ``Publisher`` or a WHEP ``Viewer``), a ``RemoteViewer`` (the handle on a viewer
that lives in a worker process), and an encoder's publish at another door. The node, its rooms,
the reports to the control plane and the doors hold sessions by this interface, never by a
union of classes, so a new kind of session changes none of them.

The members are read-only properties, so a plain attribute or a property both satisfy them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sfu.flv.tag_feed import FlvFeed
    from sfu.producer import Producer
    from signaling.claims import Claims


class Session(Protocol):
    """One participant's media session in a room (role ``publisher`` or ``viewer``)."""

    @property
    def id(self) -> str:
        """Unique on the node: the WHIP/WHEP resource id, the control plane's session id."""
        ...

    @property
    def room(self) -> str: ...

    @property
    def identity(self) -> str: ...

    @property
    def role(self) -> str:
        """``publisher`` or ``viewer``."""
        ...

    @property
    def transport(self) -> str:
        """How it reaches the room: ``whip``, ``rtmp`` (publishers) or ``whep`` (viewers), as
        the control plane counts sessions."""
        ...

    @property
    def claims(self) -> Claims | None:
        """The token the session was opened with (None for sessions opened without one)."""
        ...

    @property
    def closed(self) -> bool: ...

    async def close(self) -> None:
        """End the session and free what it holds; safe to call more than once."""
        ...


class PublisherSession(Session, Protocol):
    """A publishing session: it holds a publisher slot of the room and feeds its producers."""

    @property
    def slot(self) -> int:
        """The room's publisher slot: 0 = the anchor, then co-hosts."""
        ...

    @property
    def producers(self) -> Sequence[Producer]: ...

    @property
    def live(self) -> bool:
        """Media flows: connected and not closed."""
        ...

    @property
    def connected_at(self) -> float | None:
        """When media started (``time.monotonic()``), None before."""
        ...

    @property
    def flv_feed(self) -> FlvFeed | None:
        """The publisher's own FLV tags (an RTMP encoder's), remuxed as they are for HTTP-FLV;
        None when FLV is made from its RTP (WHIP)."""
        ...


class ViewerSession(Session, Protocol):
    """A viewing session: the room tells it when a publisher's tracks come and go."""

    def on_producer_added(self, producer: Producer) -> None: ...

    def on_producer_closed(self, producer: Producer) -> None: ...
