"""The viewer leg: a WHEP session that receives Producers' packets through its Consumers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver

from sfu.aiortc_private import (
    negotiated_codecs,
    peer_cname,
    set_sender_ssrc,
    set_sender_stream_id,
    silence_sender_rtcp,
    srtcp_protect,
)
from sfu.codecs import answer_with, describe, viewer_offers, viewer_preferences
from sfu.consumer import Consumer, release_socket, udp_sender
from sfu.errors import UnsupportedCodec
from sfu.layers import AutoLayer, Quality, layer_for
from sfu.offer import Offer
from sfu.peer import PeerLeg
from sfu.producer import Producer
from sfu.room_layout import RoomLayout
from sfu.sender_reports import SenderReports


class SilentTrack(MediaStreamTrack):
    """A track that never yields a frame: aiortc's sender then runs no encoder at all (its
    RTCP is replaced by the viewer's batched sender reports)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> None:  # type: ignore[override]
        await self._never


class Viewer(PeerLeg):
    """Sends the producers' tracks to one viewer; closes itself when none is left."""

    role = "viewer"
    transport = "whep"

    def __init__(self, *args: Any, quality: Quality = "auto", **kwargs: Any) -> None:
        """``quality`` picks the video layer each slot is sent (``sfu/layers.py``)."""
        super().__init__(*args, **kwargs)
        self.quality: Quality = quality
        self.consumers: list[Consumer] = []
        self._auto: list[AutoLayer] = []  # an auto viewer's two-layer slots
        self._slots: dict[tuple[int, str], RTCRtpTransceiver] = {}
        self._waiting: dict[tuple[int, str], Producer] = {}
        self._own: set[Producer] = set()  # an anchor's own tracks: not sent back, still live
        self._reports: SenderReports | None = None
        self._loud: list[RTCRtpTransceiver] = []  # senders whose aiortc RTCP loop still runs

    def prepare(self, offer: Offer, layout: RoomLayout, producers: list[Producer]) -> None:
        """Match the offer's media sections, in order per kind, to the room's publisher slots.

        Each sender takes its slot's SSRC and stream, so every viewer receives the same canonical
        packets and a co-host who goes live later plays on a section negotiated now. Beyond
        the room's slots, or of a kind the room does not carry, sections are answered inactive.
        """
        seen = {"audio": 0, "video": 0}
        for media in offer.media:
            if media.kind not in seen:
                continue
            slot = seen[media.kind]
            seen[media.kind] += 1
            transceiver = self.pc.addTransceiver(media.kind, direction="sendonly")
            codec = layout.codecs.get(media.kind)
            if slot >= len(layout.ssrcs) or codec is None:
                transceiver.direction = "inactive"
                continue
            if not viewer_offers([(c.name, c.parameters) for c in media.offered], codec):
                raise UnsupportedCodec(
                    f"the anchor sends {describe(codec)}, which this viewer does not offer"
                )
            set_sender_ssrc(transceiver.sender, layout.ssrcs[slot][media.kind])
            # one MediaStream per publisher (aiortc puts every sender in one): a page shows a
            # tile per stream and keeps each publisher's audio and video in sync
            set_sender_stream_id(transceiver.sender, f"{self.room}-slot{slot}")
            transceiver.sender.replaceTrack(SilentTrack(media.kind))
            transceiver.setCodecPreferences(viewer_preferences(codec))
            answer_with(transceiver, codec)
            self._slots[(slot, media.kind)] = transceiver
        for producer in producers:
            self.on_producer_added(producer)

    def on_connected(self) -> None:
        self._take_over_rtcp()
        for producer in list(self._waiting.values()):
            self._consume(producer)
        self._waiting.clear()
        if not self.consumers and not self._own:
            self.close_soon()

    def on_producer_added(self, producer: Producer) -> None:
        """A publisher went live on a slot this viewer negotiated: start forwarding it.

        A publisher watching its own room (an anchor waiting for co-hosts) is not sent its own
        tracks back; they still keep the session open."""
        key = (producer.slot_index, producer.kind)
        if key not in self._slots or producer.closed:
            return
        if producer.identity and producer.identity == self.identity:
            self._own.add(producer)
            return
        if self.connected_at is None:
            self._waiting[key] = producer
            producer.expect_viewer()
        else:
            self._consume(producer)

    def _consume(self, producer: Producer) -> None:
        transceiver = self._slots[(producer.slot_index, producer.kind)]
        codecs = negotiated_codecs(transceiver)
        if producer.closed or self.closed or not codecs or codecs[0].payloadType is None:
            return
        layer = layer_for(producer, self.quality)
        consumer = Consumer.for_sender(layer, transceiver.sender, codecs[0].payloadType, self.id)
        self.consumers.append(consumer)
        layer.attach_viewer(consumer)
        if self.quality == "auto" and producer.low is not None:
            self._auto.append(AutoLayer(consumer, producer))

    def on_producer_closed(self, producer: Producer) -> None:
        """A publisher left: drop its consumers (of either layer); with nothing left to watch
        the session ends."""
        self.consumers = [c for c in self.consumers
                          if c.producer is not producer and c.producer is not producer.low]
        self._auto = [a for a in self._auto if a.high is not producer]
        self._waiting = {k: p for k, p in self._waiting.items() if p is not producer}
        self._own.discard(producer)
        if not self.consumers and not self._waiting and not self._own:
            self.close_soon()

    def _take_over_rtcp(self) -> None:
        """Sender reports come from ``send_sender_reports`` (see sfu/sender_reports.py)."""
        transceivers = list(self._slots.values())
        if not transceivers:
            return
        dtls = transceivers[0].sender.transport
        try:
            send = udp_sender(dtls)
        except ConnectionError:
            return  # no nominated pair: aiortc's own reports carry on
        self._reports = SenderReports(srtcp_protect(dtls), send, peer_cname(self.pc))
        self._loud = [t for t in transceivers if not silence_sender_rtcp(t.sender)]

    def send_sender_reports(self) -> None:
        """Once a second (the node's tick): this viewer's SRs, in one packet; an auto viewer's
        layers are chosen on the same tick."""
        for auto in self._auto:
            auto.tick(time.monotonic())
        if self._reports is None or self.closed:
            return
        if self._loud:  # aiortc starts a sender's RTCP loop just after connecting: end it
            self._loud = [t for t in self._loud if not silence_sender_rtcp(t.sender)]
        self._reports.send(self.consumers)

    def on_closing(self) -> None:
        for consumer in self.consumers:
            consumer.close()
        self.consumers = []
        for transceiver in self._slots.values():
            release_socket(transceiver.sender.transport)
