"""The publisher leg: an anchor's WHIP session, received once, fanned out by its Producers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpTransceiver

from sfu.aiortc_private import negotiated_codecs, receive_statistics, remb_estimate
from sfu.codecs import answer_as_offered, describe, publisher_preferences, restrict_to
from sfu.errors import CodecMismatch, UnsupportedCodec
from sfu.flv.tag_feed import FlvFeed
from sfu.layers import HIGH_LAYER, LOW_LAYER, MAX_VIDEO_LAYERS
from sfu.network_quality import ReceiveCounters, offered_video_target_bps
from sfu.offer import Offer
from sfu.peer import PeerLeg
from sfu.producer import Producer, TrackSlot
from sfu.receiver_tap import keyframe_requester, tap_receiver
from sfu.settings import FAST_START_MS, KEYFRAME_THROTTLE_MS


class Publisher(PeerLeg):
    """Receives an anchor's audio and video; one Producer per received track."""

    role = "publisher"
    transport = "whip"
    flv_feed: FlvFeed | None = None  # FLV is made from its RTP (sfu/flv/output.py)

    def __init__(
        self,
        *args: Any,
        on_live: Callable[[Publisher], None] | None = None,
        slot: int = 0,
        track_slots: dict[str, TrackSlot] | None = None,
        keyframe_throttle_s: float = KEYFRAME_THROTTLE_MS / 1000,
        fast_start_s: float = FAST_START_MS / 1000,
        **kwargs: Any,
    ) -> None:
        """``slot`` is the room's publisher slot (0 = the anchor) and ``track_slots`` its
        SSRCs per kind; the throttle and fast start go to each of its producers."""
        super().__init__(*args, **kwargs)
        self.producers: list[Producer] = []
        self.low_layers: list[Producer] = []  # a second video's producer (sfu/layers.py)
        self._transceivers: list[RTCRtpTransceiver] = []
        self._received: list[tuple[RTCRtpReceiver, Producer]] = []  # for the quality score
        self._target_bps: int | None = None  # the offer's b=TIAS / b=AS for video
        self._on_live = on_live
        self.slot = slot
        self.track_slots = track_slots or {}
        self._keyframe_throttle_s = keyframe_throttle_s
        self._fast_start_s = fast_start_s

    def on_connected(self) -> None:
        if self._on_live is not None:
            self._on_live(self)

    def prepare(
        self, offer: Offer, required: dict[str, RTCRtpCodecParameters] | None = None
    ) -> None:
        """Create recvonly transceivers with our codec choice before the offer is applied, so
        the answer carries one H.264 profile (or VP8), in the publisher's own spelling, and Opus.
        A co-host must send the codecs the room already has (``required``; for H.264 the same
        profile): viewers negotiated those."""
        self._target_bps = offered_video_target_bps(offer.sdp)
        videos = 0
        for media in offer.media:
            if media.kind not in ("audio", "video"):
                continue
            if media.kind == "video":
                videos += 1
                if videos > MAX_VIDEO_LAYERS:  # answered inactive: nothing to forward it to
                    self.pc.addTransceiver("video", direction="inactive")
                    continue
            offered = [(c.name, c.parameters) for c in media.offered]
            prefs = publisher_preferences(media.kind, offered)
            if required and media.kind in required:
                room_codec = required[media.kind]
                prefs = restrict_to(media.kind, offered, room_codec)
                if not prefs:
                    raise CodecMismatch(
                        f"this room's {media.kind} is {describe(room_codec)}; offer it to co-host"
                    )
            if not prefs:
                wanted = "H.264 or VP8" if media.kind == "video" else "Opus"
                raise UnsupportedCodec(
                    f"{media.kind} offers {', '.join(media.codecs) or 'no codec'}; "
                    f"ShopCast needs {wanted}"
                )
            transceiver = self.pc.addTransceiver(media.kind, direction="recvonly")
            transceiver.setCodecPreferences(prefs)
            answer_as_offered(transceiver, prefs, offered)
            self._transceivers.append(transceiver)

    async def answer(self, offer_sdp: str) -> str:
        """The first video track is the slot's video; a second one is its low layer: a
        producer of its own, sent with the slot's SSRC, hung off the first (``low``)."""
        answer = await super().answer(offer_sdp)
        for transceiver in self._transceivers:
            codecs = negotiated_codecs(transceiver)
            if not codecs or transceiver.currentDirection == "inactive":
                continue
            high = next((p for p in self.producers if p.kind == "video"), None)
            if transceiver.kind == "video" and high is not None:
                low = self._producer(transceiver, codecs[0], TrackSlot(ssrc=high.ssrc),
                                     LOW_LAYER)
                high.low = low
                self.low_layers.append(low)
                continue
            producer = self._producer(transceiver, codecs[0],
                                      self.track_slots.get(transceiver.kind))
            self._received.append((transceiver.receiver, producer))
            self.producers.append(producer)
        return answer

    def _producer(self, transceiver: RTCRtpTransceiver, codec: RTCRtpCodecParameters,
                  slot: TrackSlot | None, layer: str = HIGH_LAYER) -> Producer:
        """A producer fed by ``transceiver``'s receiver (tapped before any decoder)."""
        producer = Producer(
            transceiver.kind,
            codec,
            publisher_id=self.id,
            request_keyframe=keyframe_requester(transceiver.receiver),
            keyframe_throttle_s=self._keyframe_throttle_s,
            fast_start_s=self._fast_start_s,
            slot=slot,
            slot_index=self.slot,
            identity=self.identity,
            layer=layer,
        )
        tap_receiver(transceiver.receiver, producer)
        return producer

    def receive_counters(self) -> ReceiveCounters:
        """What this leg received so far, for its network-quality score (read on a timer).
        RTT is not known on this side: the publisher sends no report blocks for a receive-only
        leg, and aiortc asks for no extended reports."""
        expected = received = octets = 0
        jitter_ms = 0.0
        remb: int | None = None
        for receiver, producer in self._received:
            for stats in receive_statistics(receiver):
                if stats.max_seq is None:
                    continue
                expected += stats.packets_expected
                received += stats.packets_received
                if producer.kind == "video":
                    jitter_ms = max(jitter_ms, stats.jitter * 1000 / producer.codec.clockRate)
            if producer.kind == "video":
                octets += producer.octets
                remb = remb_estimate(receiver)
        return ReceiveCounters(expected, received, octets, jitter_ms,
                               target_bps=self._target_bps, remb_bps=remb)

    @property
    def live(self) -> bool:
        return self.connected_at is not None and not self.closed

    def on_closing(self) -> None:
        for producer in self.producers + self.low_layers:
            for consumer in producer.close():
                consumer.close()
