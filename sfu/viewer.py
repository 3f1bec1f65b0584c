"""The viewer leg: a WHEP session that receives Producers' packets through its Consumers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver

from sfu.codecs import viewer_preferences
from sfu.consumer import Consumer, release_socket
from sfu.offer import Offer
from sfu.peer import PeerLeg
from sfu.producer import Producer
from signaling.errors import bad_request


class SilentTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc's sender then runs no encoder at all, while
    its RTCP loop (sender reports, BYE) keeps working."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> None:  # type: ignore[override]
        await self._never


class Viewer(PeerLeg):
    """Sends the producers' tracks to one viewer; closes itself when none is left."""

    role = "viewer"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumers: list[Consumer] = []
        self._pairs: list[tuple[RTCRtpTransceiver, Producer]] = []
        self._transceivers: list[RTCRtpTransceiver] = []

    def prepare(self, offer: Offer, producers: list[Producer]) -> None:
        """Match the offer's media sections, in order, to the producers of the same kind.

        Each matched sender takes the producer's SSRC, so every viewer receives the same
        canonical packets; a section with no producer is answered inactive.
        """
        available = {kind: [p for p in producers if p.kind == kind] for kind in ("audio", "video")}
        for media in offer.media:
            if media.kind not in available:
                continue
            transceiver = self.pc.addTransceiver(media.kind, direction="sendonly")
            queue = available[media.kind]
            if not queue:
                transceiver.direction = "inactive"
                continue
            producer = queue.pop(0)
            if producer.codec.name.lower() not in {c.lower() for c in media.codecs}:
                raise bad_request(
                    f"the anchor sends {producer.codec.name}, which this viewer does not offer",
                    "unsupported_codec",
                )
            transceiver.sender._ssrc = producer.ssrc
            transceiver.sender.replaceTrack(SilentTrack(media.kind))
            transceiver.setCodecPreferences(viewer_preferences(producer.codec))
            self._pairs.append((transceiver, producer))
            self._transceivers.append(transceiver)

    def on_connected(self) -> None:
        for transceiver, producer in self._pairs:
            codecs = transceiver._codecs
            if producer.closed or not codecs or codecs[0].payloadType is None:
                continue
            consumer = Consumer.for_sender(
                producer, transceiver.sender, codecs[0].payloadType, self.id
            )
            self.consumers.append(consumer)
            producer.attach(consumer)
        if not self.consumers:
            self.close_soon()

    def on_producer_closed(self, producer: Producer) -> None:
        """The anchor left: drop its consumers; with nothing left to watch the session ends."""
        self.consumers = [c for c in self.consumers if c.producer is not producer]
        self._pairs = [(t, p) for t, p in self._pairs if p is not producer]
        if not self._pairs:
            self.close_soon()

    def refresh_sender_reports(self) -> None:
        for consumer in self.consumers:
            consumer.refresh_sender_report()

    def on_closing(self) -> None:
        for consumer in self.consumers:
            consumer.close()
        self.consumers = []
        for transceiver in self._transceivers:
            release_socket(transceiver.sender.transport)
