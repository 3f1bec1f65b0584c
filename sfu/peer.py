"""What publisher and viewer legs share: one aiortc peer connection answered as DTLS server,
a lifetime tied to its connection state, and a close that frees everything once."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from sfu.aiortc_private import prefer_dtls_server
from sfu.errors import MediaError, NegotiationFailed
from sfu.events_channel import LABEL
from sfu.ice import announce_public_ip
from sfu.offer import Offer
from signaling.claims import Claims

logger = logging.getLogger("shopcast.sfu.peer")

CONNECT_TIMEOUT_S = 20.0


async def negotiate(leg: PeerLeg, offer: Offer, prepare: Callable[[], None]) -> str:
    """Prepare and answer; any failure closes the leg so nothing half-made stays behind."""
    try:
        prepare()
        answer = await leg.answer(offer.sdp)
    except MediaError:
        await leg.close()
        raise
    except Exception as exc:
        await leg.close()
        raise NegotiationFailed(f"cannot answer this offer: {exc}") from exc
    logger.info("%s created id=%s room=%s identity=%s", leg.role, leg.id, leg.room, leg.identity)
    return answer


class PeerLeg:
    """One WebRTC session of a participant (a WHIP publish or a WHEP play), in this process;
    a ``Session`` (``sfu/session.py``)."""

    role = "peer"
    transport = "webrtc"  # whip or whep in the subclasses

    def __init__(
        self,
        room: str,
        identity: str,
        configuration: RTCConfiguration,
        *,
        public_ip: str = "",
        on_closed: Callable[[PeerLeg], None] | None = None,
        claims: Claims | None = None,
        on_events_channel: Callable[[PeerLeg, RTCDataChannel], None] | None = None,
    ) -> None:
        """``claims``: the token the session was opened with; ``on_events_channel`` serves its
        ``events`` data channel (None: the channel is not served)."""
        self.id = uuid.uuid4().hex
        self.room = room
        self.identity = identity
        self.pc = RTCPeerConnection(configuration=configuration)
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.closed = False
        self._public_ip = public_ip
        self._on_closed = on_closed
        self._close_task: asyncio.Task[None] | None = None
        self._timeout: asyncio.TimerHandle | None = None
        self.claims = claims
        self._on_events_channel = on_events_channel
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._on_datachannel)

    @property
    def state(self) -> str:
        return "closed" if self.closed else self.pc.connectionState

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return our answer, as DTLS server (``setup:passive``).

        Encoders built on GStreamer send ``actpass`` offers and fail the handshake when aiortc
        takes the DTLS client role, so we take the server role whenever the offer lets us.
        """
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        transports = {t.receiver.transport for t in self.pc.getTransceivers()}
        if self.pc.sctp is not None:
            transports.add(self.pc.sctp.transport)
        for dtls in transports:
            prefer_dtls_server(dtls)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._timeout = asyncio.get_running_loop().call_later(
            CONNECT_TIMEOUT_S, self._connect_timeout
        )
        return announce_public_ip(self.pc.localDescription.sdp, self._public_ip)

    def _connect_timeout(self) -> None:
        if self.connected_at is None and not self.closed:
            logger.info("%s %s did not connect in time room=%s", self.role, self.id, self.room)
            self.close_soon()

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        logger.info(
            "%s state=%s id=%s room=%s identity=%s", self.role, state, self.id, self.room,
            self.identity,
        )
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()
            if self._timeout is not None:
                self._timeout.cancel()
            self.on_connected()
        elif state in ("failed", "closed"):
            self.close_soon()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        """Only the ``events`` channel is served, and only where a host was set for it."""
        if channel.label == LABEL and self._on_events_channel is not None:
            self._on_events_channel(self, channel)

    def on_connected(self) -> None:
        """Called once when ICE and DTLS are up; subclasses start media here."""

    def on_closing(self) -> None:
        """Called once, synchronously, when the leg starts closing; detach media here."""

    def close_soon(self) -> None:
        """Close from a sync context (a callback); safe to call many times."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        if self.closed:
            if self._close_task is not None and self._close_task is not asyncio.current_task():
                await asyncio.shield(self._close_task)
            return
        self.closed = True
        if self._timeout is not None:
            self._timeout.cancel()
        self.on_closing()
        if self._on_closed is not None:
            self._on_closed(self)
        try:
            await self.pc.close()
        except Exception:  # a half-negotiated connection may fail to close cleanly
            logger.exception("%s %s: error while closing", self.role, self.id)
        logger.info("%s closed id=%s room=%s", self.role, self.id, self.room)
