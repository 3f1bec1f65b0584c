"""An anchor publishing over RTMP (OBS, ffmpeg, a hardware encoder): a publisher like a WHIP one.

It takes a publisher slot, has one ``Producer`` per track and goes live at its first keyframe,
so viewers, workers, FLV, events, webhooks, REST kick/mute/close and ``/metrics`` treat it as
they treat a WHIP anchor. Only the way packets are made differs: H.264 is packetized from the
encoder's access units (``sfu/rtmp/video.py``), AAC becomes Opus once per room
(``sfu/rtmp/audio.py``), and HTTP-FLV readers get the encoder's own tags (``sfu/flv/tag_feed.py``).

An encoder whose TCP connection drops keeps its session for ``grace_s``: a re-publish of the same
identity to the same room in that time continues the tracks (sequence numbers, timestamps,
SSRCs), so viewers keep playing without re-joining. An explicit unpublish ends it at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters

from sfu.errors import MediaError
from sfu.flv.tag_feed import TAG_AUDIO, TAG_VIDEO, FeedTag, FlvFeed
from sfu.producer import Producer, TrackSlot, ntp_now
from sfu.rtmp.audio import OPUS_CODEC, OPUS_KHZ, RtmpAudio
from sfu.rtmp.avc import AvcConfig
from sfu.rtmp.connection import RtmpConnection
from sfu.rtmp.flv_tags import parse_audio_tag, parse_video_tag
from sfu.rtmp.video import CLOCK_KHZ, RtmpVideo
from sfu.settings import KEYFRAME_THROTTLE_MS, RTMP_GRACE_MS
from signaling.tokens import Claims

logger = logging.getLogger("shopcast.sfu.rtmp")

AUDIO_WAIT_S = 1.0  # metadata announced audio: wait this long for its config before going live
SENDER_REPORT_EVERY = 50  # audio packets between clock mappings


@dataclass(frozen=True)
class RtmpOptions:
    """What an RTMP publisher takes from the node's settings."""

    keyframe_throttle_s: float = KEYFRAME_THROTTLE_MS / 1000
    fast_start_s: float = 4.0  # an encoder can't be asked for a keyframe: replay up to a GOP
    fast_start_packets: int = 1024
    grace_s: float = RTMP_GRACE_MS / 1000
    keyframe_interval_s: float = 2.0  # of our own transcode, when the anchor sends B-frames


class RtmpPublisher:
    """One RTMP publish session (a ``StreamSink`` for the RTMP server)."""

    role = "publisher"
    transport = "rtmp"

    def __init__(
        self,
        room: str,
        identity: str,
        *,
        claims: Claims | None,
        slot: int,
        track_slots: dict[str, TrackSlot],
        connection: RtmpConnection,
        options: RtmpOptions,
        on_live: Callable[[RtmpPublisher], None],
        on_closed: Callable[[RtmpPublisher], None],
        on_warning: Callable[[RtmpPublisher, str, str], None] | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.room = room
        self.identity = identity
        self.claims = claims
        self.slot = slot
        self.track_slots = track_slots
        self.connection: RtmpConnection | None = connection
        self.options = options
        self.producers: list[Producer] = []
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.closed = False
        self.flv_feed = FlvFeed()  # FLV readers get the encoder's own tags
        self.metadata: dict[str, object] = {}
        self.video = RtmpVideo(room, keyframe_interval_s=options.keyframe_interval_s,
                               on_bframes=self._bframes_seen)
        self.audio: RtmpAudio | None = None
        self.reconnects = 0
        self.errors = 0
        self._on_live = on_live
        self._on_closed = on_closed
        self._on_warning = on_warning
        self._base_ms: int | None = None  # the first tag's time: the room's time zero
        self._offset_ms = 0  # added to a re-publish's timestamps so time never steps back
        self._last_ms = 0
        self._wall0 = 0.0
        self._first_keyframe_at: float | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._audio_packets = 0
        self._flv_muted = False  # video was muted: FLV resumes at a keyframe

    # --- state -------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        return self.connected_at is not None and not self.closed

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        if self.connection is None:
            return "reconnecting"
        return "connected" if self.live else "new"

    # --- StreamSink (called by the RTMP server, synchronously) -------------------------------

    def on_metadata(self, metadata: dict[str, object]) -> None:
        self.metadata = dict(metadata)

    def on_video(self, timestamp_ms: int, payload: bytes) -> None:
        try:
            self._video(timestamp_ms, payload)
        except MediaError as exc:
            self._refuse_media(exc)

    def on_audio(self, timestamp_ms: int, payload: bytes) -> None:
        try:
            self._audio(timestamp_ms, payload)
        except MediaError as exc:
            self._refuse_media(exc)

    def on_end(self, reason: str) -> None:
        """The encoder went away: an unpublish ends the session, a drop waits for a return."""
        self.connection = None
        if self.closed:
            return
        if reason == "unpublish" or not self.live or self.options.grace_s <= 0:
            self._finish(reason)
            return
        logger.info("RTMP room=%s publisher=%s dropped (%s); waiting %.1f s for a re-publish",
                    self.room, self.id, reason, self.options.grace_s)
        self._grace = asyncio.get_running_loop().call_later(
            self.options.grace_s, self._finish, "grace_expired")

    def resume(self, connection: RtmpConnection) -> None:
        """The same identity published again within the grace period: carry on."""
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self.connection = connection
        self.reconnects += 1
        self._offset_ms = self._last_ms + 1  # the new stream's time zero follows the old one
        self._base_ms = None
        logger.info("RTMP room=%s publisher=%s resumed", self.room, self.id)

    @property
    def waiting_for_return(self) -> bool:
        return self._grace is not None and not self.closed

    # --- media ---------------------------------------------------------------------------------

    def _time(self, timestamp_ms: int) -> int:
        """Encoder time -> room time (ms since this session's first tag, across re-publishes)."""
        if self._base_ms is None:
            self._base_ms = timestamp_ms
            if not self._wall0:
                self._wall0 = time.time()
        ms = max(timestamp_ms - self._base_ms + self._offset_ms, 0)
        self._last_ms = max(self._last_ms, ms)
        return ms

    def _video(self, timestamp_ms: int, payload: bytes) -> None:
        tag = parse_video_tag(payload)
        if tag is None:
            return
        ms = self._time(timestamp_ms)
        if tag.avc_packet_type == 0:
            self.video.set_config(AvcConfig.parse(tag.data))
            self.flv_feed.push(FeedTag(TAG_VIDEO, ms, payload, False, True))
            return
        if tag.avc_packet_type != 1:
            return
        unit = self.video.access_unit(tag.data, ms, tag.composition_time_ms)
        if unit is None:
            return
        if self.connected_at is None and not self._ready(unit.keyframe):
            return
        if self._flv_allows(self.video.producer, unit.keyframe):
            self.flv_feed.push(FeedTag(TAG_VIDEO, ms, payload, unit.keyframe, False))
        if unit.keyframe:
            self._map_clock(self.video.producer, unit.pts_ms, CLOCK_KHZ)
        self.video.push(unit)

    def _audio(self, timestamp_ms: int, payload: bytes) -> None:
        tag = parse_audio_tag(payload)
        if tag is None:
            return
        ms = self._time(timestamp_ms)
        if tag.aac_packet_type == 0:
            if self.audio is None or self.audio.config != tag.data:
                if self.audio is not None:
                    self.audio.close()
                producer = self.audio.producer if self.audio is not None else None
                self.audio = RtmpAudio(self.room, tag.data, on_opus=self.flv_feed.push_opus)
                self.audio.producer = producer
            self.flv_feed.push(FeedTag(TAG_AUDIO, ms, payload, False, True))
            return
        if self.audio is None or self.connected_at is None:
            return
        if self._flv_allows(self.audio.producer, True):
            self.flv_feed.push(FeedTag(TAG_AUDIO, ms, payload, False, False))
        self._audio_packets += 1
        if self._audio_packets % SENDER_REPORT_EVERY == 1:
            self._map_clock(self.audio.producer, ms, OPUS_KHZ)
        self.audio.push(ms, tag.data)

    def _flv_allows(self, producer: Producer | None, keyframe: bool) -> bool:
        """A muted track (REST mute) reaches FLV readers no more than WebRTC viewers; video
        comes back at a keyframe."""
        if producer is None or not producer.muted:
            if producer is not None and producer.kind == "video" and self._flv_muted:
                if not keyframe:
                    return False
                self._flv_muted = False
            return True
        if producer.kind == "video":
            self._flv_muted = True
        return False

    def _ready(self, keyframe: bool) -> bool:
        """Go live at a keyframe once the audio config is known (or announced as absent)."""
        if not keyframe:
            return False
        now = time.monotonic()
        if self._first_keyframe_at is None:
            self._first_keyframe_at = now
        wants_audio = "audiocodecid" in self.metadata
        if self.audio is None and wants_audio and now - self._first_keyframe_at < AUDIO_WAIT_S:
            return False
        self._go_live()
        return True

    def _go_live(self) -> None:
        self.video.make_producer(lambda codec: self._producer("video", codec))
        if self.audio is not None:
            self.audio.producer = self._producer("audio", OPUS_CODEC)
        self.producers = [p for p in (self.video.producer,
                                      self.audio.producer if self.audio else None) if p]
        self.connected_at = time.monotonic()
        logger.info("RTMP room=%s publisher=%s live: video %s%s, audio %s", self.room, self.id,
                    self.video.producer.codec.parameters.get("profile-level-id")
                    if self.video.producer else "-",
                    " (B-frames: transcoded for WebRTC)" if self.video.bframes else "",
                    "aac->opus" if self.audio else "none")
        self._on_live(self)

    def _producer(self, kind: str, codec: RTCRtpCodecParameters) -> Producer:
        return Producer(
            kind, codec,
            publisher_id=self.id,
            request_keyframe=self.video.request_keyframe if kind == "video" else _no_keyframe,
            keyframe_throttle_s=self.options.keyframe_throttle_s,
            fast_start_s=self.options.fast_start_s,
            fast_start_packets=self.options.fast_start_packets,
            slot=self.track_slots.get(kind),
            slot_index=self.slot,
            identity=self.identity,
        )

    def _map_clock(self, producer: Producer | None, ms: int, khz: int) -> None:
        """Viewers' sender reports: both tracks share the encoder's clock, so A/V stay in sync."""
        if producer is None:
            return
        wall = self._wall0 + ms / 1000
        ntp = ntp_now() + int((wall - time.time()) * (1 << 32))
        producer.on_sender_report(ntp & 0xFFFFFFFFFFFFFFFF, (ms * khz) & 0xFFFFFFFF)

    def _bframes_seen(self) -> None:
        if self._on_warning is not None:
            self._on_warning(self, "bframes",
                             "the encoder sends B-frames: set bframes=0 (x264 `bframes=0`, "
                             "OBS Advanced > Output > x264 options `bframes=0`); WebRTC "
                             "viewers get a transcode meanwhile")

    def _refuse_media(self, exc: MediaError) -> None:
        """An encoder sending what we can't forward (another codec, garbage) is disconnected."""
        self.errors += 1
        logger.warning("RTMP room=%s publisher=%s media refused: %s (%s)", self.room, self.id,
                       exc.message, exc.code)
        if self.connection is not None:
            self.connection.close("error")

    # --- lifetime ------------------------------------------------------------------------------

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self._grace = None
        self.closed = True
        for producer in self.producers:
            for sink in producer.close():
                sink.close()
        self.video.close()
        if self.audio is not None:
            self.audio.close()
        logger.info("RTMP room=%s publisher=%s ended (%s)", self.room, self.id, reason)
        self._on_closed(self)

    async def close(self) -> None:
        """Kicked, room closed, node stopping: end the encoder's connection and the session."""
        if self._grace is not None:
            self._grace.cancel()
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close("kicked")
        self._finish("closed")


def _no_keyframe(_media_ssrc: int) -> None:
    """Audio needs no keyframes."""
