"""The FLV output of one live room, fed by its publisher's producers, never per viewer.

Video: H.264 access units are remuxed as they are (no re-encode); a VP8 anchor is transcoded
to H.264 once here. Audio: Opus becomes AAC once here. Tags go into one shared log (GOP cache
+ every reader's queue); a tick every ``flush_interval_ms`` writes each reader's backlog in
one send, trims the log and asks for keyframes on the FLV keyframe period.

FLV keyframe period (``FlvSettings.keyframe_period_ms``, like SRS's ``pli_for_rtmp``): a
browser anchor sends keyframes only when asked, so without this a joiner could find only a
minutes-old GOP. Asking every N ms
keeps the GOP cache fresh (joiners start within budget from the cache), at the price of one
keyframe per N ms for every viewer of the room, WebRTC ones included (a keyframe costs 5-10x a
delta frame, so at a fixed bitrate the other frames get coarser). 0 disables it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from sfu.flv.audio import SAMPLES_PER_MS, AacPacket, OpusPacket, OpusToAac
from sfu.flv.depacketizer import START_CODE, H264Depacketizer, Vp8Depacketizer, parse_rtp
from sfu.flv.direct import DirectTags
from sfu.flv.feeds import CohostFeed, ProducerSink, picture_size
from sfu.flv.gop_cache import Entry, TagLog
from sfu.flv.mixer import MixFrame, VideoMixer
from sfu.flv.muxer import TAG_VIDEO, StreamMuxer, Tag, file_header, retime
from sfu.flv.readers import ReaderBook
from sfu.flv.tag_feed import FlvFeed
from sfu.flv.timeline import Timeline, TrackClock
from sfu.flv.transcode import H264Frame, SourceFrame, ToH264
from sfu.flv.viewer_queue import FlvReader, Transport
from sfu.flv.worker import OrderedWorker
from sfu.producer import Producer
from sfu.settings import FlvSettings

logger = logging.getLogger("shopcast.sfu.flv")

CLOCK_REFRESH_S = 1.0


class _Mix(enum.Enum):
    """Where the room's FLV video comes from while co-hosts come and go."""

    OFF = "off"  # the anchor's own stream (remuxed, or transcoded from VP8)
    STARTING = "starting"  # mixer warming up; the anchor's stream still goes out
    MIXING = "mixing"  # the mixer's stream (its first keyframe brought new headers)
    STOPPING = "stopping"  # no co-host left: the mix goes on until the anchor's next keyframe


class RoomFlvOutput:
    """Builds the room's FLV tags from its producers and serves them to readers."""

    def __init__(self, room: str, producers: list[Producer], settings: FlvSettings,
                 feed: FlvFeed | None = None) -> None:
        """``feed``: the anchor sends FLV tags itself (RTMP); they are remuxed as they came
        (``sfu/flv/direct.py``) and its producers only serve the co-host mix."""
        self.room = room
        self.settings = settings
        self.log = TagLog(keep_ms=settings.latency_budget_ms + 1000)
        self.book = ReaderBook()
        self.readers = self.book.active
        self.video = next((p for p in producers if p.kind == "video"), None)
        self.audio = next((p for p in producers if p.kind == "audio"), None)
        self.publisher_id = producers[0].publisher_id if producers else ""
        self.timeline = Timeline()
        self._clocks: list[TrackClock] = []
        self._video_muxer: StreamMuxer | None = None
        self._audio_muxer: StreamMuxer | None = None
        self._params = (b"", b"")
        self._force_keyframe = False
        self._last_keyframe = time.monotonic()
        self.keyframes = 0
        self.closed = False
        self._sinks: list[tuple[Producer, ProducerSink]] = []
        self._h264: H264Depacketizer | None = None
        self._vp8: Vp8Depacketizer | None = None
        self._transcoder: OrderedWorker[SourceFrame, H264Frame] | None = None
        self._aac: OrderedWorker[OpusPacket, AacPacket] | None = None
        self._opus_to_aac = OpusToAac()
        self._last_video_ms = -1
        self._mix = _Mix.OFF
        self._mixer: VideoMixer | None = None
        self._mix_worker: OrderedWorker[MixFrame, H264Frame] | None = None
        self._cohosts: dict[int, CohostFeed] = {}
        self._past_mixer_cpu = 0.0
        self._past_mixer_busy = 0.0  # closed mixers' codec time: the counter never steps back
        self._direct: DirectTags | None = None
        self._announced_audio = False
        self.mixed_audio = False  # RTMP anchor: the co-host mix's AAC is on air
        self._anchor_opus = functools.partial(self.mix_audio, 0)
        if feed is not None:
            self._direct = DirectTags(self, feed)
            self.publish_header()
        self.video_clock: TrackClock | None = None  # the room's media clock samples it
        if self.video is not None and self._direct is None:
            self._video_clock = self.video_clock = self._clock(self.video)
            if self.video.codec.name.lower() == "vp8":
                self._vp8 = Vp8Depacketizer(on_loss=self.video.request_keyframe)
                converter = ToH264("vp8", keyframe_interval_s=settings.keyframe_period_ms / 1000)
                self._transcoder = OrderedWorker(
                    f"flv-vp8-{room}", converter.process, self._on_transcoded
                )
            else:
                self._h264 = H264Depacketizer(on_loss=self.video.request_keyframe)
            self._attach(self.video, self._on_video_packet)
        if self.audio is not None and self._direct is None:
            self._audio_clock = self._clock(self.audio)
            self._audio_muxer = StreamMuxer.audio()
            self._aac = OrderedWorker(f"flv-aac-{room}", self._opus_to_aac.process, self._on_aac)
            self._attach(self.audio, self._on_audio_packet)
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def _clock(self, producer: Producer) -> TrackClock:
        clock = self.timeline.track(producer.codec.clockRate, producer.sender_report,
                                    lambda: producer.has_sender_report,
                                    lambda: producer.packets > 0)
        self._clocks.append(clock)
        return clock

    def _attach(self, producer: Producer, forward: Any) -> None:
        sink = ProducerSink(forward)
        self._sinks.append((producer, sink))
        producer.attach(sink)

    @property
    def live(self) -> bool:
        return not self.closed and bool(self.log.header)

    # --- per packet (synchronous, on the forwarding path) ------------------------------------

    def _on_video_packet(self, packet: bytes, keyframe: bool) -> None:
        if self._h264 is not None:
            for frame in self._h264.push(packet):
                ms = self._video_clock.ms(frame.timestamp)
                self.mix_video(0, frame.data, ms, frame.keyframe, frame.sps, frame.pps)
                self._remuxed(frame.data, ms, frame.keyframe, frame.sps, frame.pps, None)
        elif self._vp8 is not None and self._transcoder is not None:
            for frame in self._vp8.push(packet):
                ms = self._video_clock.ms(frame.timestamp)
                self.mix_video(0, frame.data, ms, frame.keyframe, b"", b"")
                if self._mix is _Mix.MIXING:
                    continue  # the mix replaces the transcoded anchor: spare the encoder
                force, self._force_keyframe = self._force_keyframe, False
                self._transcoder.submit(SourceFrame(frame.data, ms, force))

    def _on_audio_packet(self, packet: bytes, keyframe: bool) -> None:
        rtp = parse_rtp(packet)
        if rtp is not None and self._aac is not None:
            pts = self._audio_clock.ms(rtp.timestamp) * SAMPLES_PER_MS
            self._aac.submit(OpusPacket(rtp.payload, pts))

    # --- co-hosts: the mix (see sfu/flv/mixer.py) --------------------------------------------

    def set_cohosts(self, cohosts: dict[int, list[Producer]]) -> None:
        """The room's co-hosts by slot, whenever one comes or goes: FLV mixes them in while
        there are any and returns to the anchor's own stream when none is left."""
        for slot in [s for s in self._cohosts if s not in cohosts]:
            self._cohosts.pop(slot).detach()
        for slot, producers in cohosts.items():
            if slot not in self._cohosts and self.video is not None:
                self._cohosts[slot] = CohostFeed(self, slot, producers)
        slots = [0, *sorted(self._cohosts)]
        self._opus_to_aac.active = frozenset(slots)
        if self._cohosts and self._mix in (_Mix.OFF, _Mix.STOPPING):
            self._start_mix()
        elif not self._cohosts and self._mix in (_Mix.STARTING, _Mix.MIXING):
            self._stop_mix()
        if self._mixer is not None:
            self._mixer.slots = slots

    def _start_mix(self) -> None:
        assert self.video is not None
        if self._mixer is None:
            self._mixer = VideoMixer(self.video.codec.name, self.settings.layout,
                                     keyframe_interval_s=self.settings.keyframe_period_ms / 1000)
            self._mix_worker = OrderedWorker(f"flv-mix-{self.room}", self._mixer.process,
                                             self._on_mixed)
        self._mix = _Mix.MIXING if self._mix is _Mix.STOPPING else _Mix.STARTING
        if self._direct is not None:
            self._mix_direct_audio(True)
        self.video.request_keyframe()  # the mixer's anchor decoder starts at a keyframe
        logger.info("FLV room=%s mixing %d co-host(s)", self.room, len(self._cohosts))

    def _stop_mix(self) -> None:
        """Keep mixing until the anchor's next keyframe, then remux it again (new headers)."""
        if self._mix is _Mix.STARTING:
            self._close_mixer()
            return
        self._mix = _Mix.STOPPING
        self.request_keyframe()
        logger.info("FLV room=%s back to the anchor at its next keyframe", self.room)

    def _close_mixer(self) -> None:
        self._mix = _Mix.OFF
        if self._direct is not None:
            self._mix_direct_audio(False)
        if self._mix_worker is not None:
            self._mix_worker.close()
            self._past_mixer_busy += self._mix_worker.busy_s
        if self._mixer is not None:
            self._past_mixer_cpu += self._mixer.cpu_s
        self._mixer, self._mix_worker = None, None

    def _mix_direct_audio(self, on: bool) -> None:
        """An RTMP anchor's room: while co-hosts are mixed, FLV audio is the AAC of every
        publisher's Opus summed (the anchor's as made for WebRTC), not the anchor's own AAC."""
        assert self._direct is not None
        if not on:
            self._direct.feed.remove_opus(self._anchor_opus)
            if self.mixed_audio:
                self.mixed_audio = False
                self._direct.audio_source_changed()
                self.publish_header()
            return
        if self._aac is None:
            self._audio_muxer = StreamMuxer.audio()
            self._aac = OrderedWorker(f"flv-aac-{self.room}", self._opus_to_aac.process,
                                      self._on_aac)
        self._direct.feed.add_opus(self._anchor_opus)

    def mix_audio(self, slot: int, opus: bytes, ms: int = 0) -> None:
        """A publisher's Opus payload, for the AAC mix (on the codec thread); ``ms`` times the
        output (the anchor's, slot 0)."""
        if self._aac is not None:
            self._aac.submit(OpusPacket(opus, ms * SAMPLES_PER_MS, slot))

    def mix_video(self, slot: int, data: bytes, ms: int, keyframe: bool, sps: bytes, pps: bytes
                  ) -> None:
        """A publisher's reassembled frame, for the mixer while it runs (slot 0's ``ms`` times
        the output)."""
        if self._mix_worker is None:
            return
        if keyframe and sps and START_CODE + sps not in data:  # decoders need them in-band
            data = START_CODE + sps + START_CODE + pps + data
        self._mix_worker.submit(MixFrame(slot, data, ms))

    def _on_mixed(self, frames: list[H264Frame]) -> None:
        for f in frames:
            if self._mix is _Mix.STARTING:
                if not f.keyframe:
                    continue
                self._mix = _Mix.MIXING  # the switch: a mixer keyframe with its own headers
            if self._mix in (_Mix.MIXING, _Mix.STOPPING):
                self._video_frame(f.data, f.timestamp_ms, f.keyframe, f.sps, f.pps,
                                  (f.width, f.height))

    # --- muxing ------------------------------------------------------------------------------

    def _on_transcoded(self, frames: list[H264Frame]) -> None:
        for f in frames:
            self._remuxed(f.data, f.timestamp_ms, f.keyframe, f.sps, f.pps, (f.width, f.height))

    def _remuxed(
        self, data: bytes, ms: int, keyframe: bool, sps: bytes, pps: bytes,
        size: tuple[int, int] | None,
    ) -> None:
        """The anchor's own stream: out unless the mix replaces it; a keyframe ends a mix that
        is stopping."""
        if self._mix is _Mix.MIXING:
            return
        if self._mix is _Mix.STOPPING:
            if not keyframe:
                return
            self._close_mixer()
            self._params = (b"", b"")  # the anchor's headers again, even if they match
        self._video_frame(data, ms, keyframe, sps, pps, size)

    def _video_frame(
        self, data: bytes, ms: int, keyframe: bool, sps: bytes, pps: bytes,
        size: tuple[int, int] | None,
    ) -> None:
        if self.closed:
            return
        ms = max(ms, self._last_video_ms + 1)  # a switch of source never steps back in time
        if keyframe and (sps, pps) != self._params and self._new_video_muxer(
            data, ms, sps, pps, size
        ):
            return
        if self._video_muxer is not None:  # nothing goes out before the first keyframe
            self._append_video(self._video_muxer.mux(data, ms, keyframe), b"")

    def _new_video_muxer(
        self, data: bytes, ms: int, sps: bytes, pps: bytes, size: tuple[int, int] | None
    ) -> bool:
        """SPS/PPS changed (first keyframe, resolution change): new container, new header.

        Readers already playing get the new sequence header glued before this keyframe.
        Returns False if the keyframe could not be read (the old muxer carries on).
        """
        width, height = size or picture_size(data)
        if not width:
            return False
        old = self._video_muxer
        muxer = StreamMuxer.video(width, height)
        self._video_muxer = muxer
        self._params = (sps, pps)
        if old is not None:
            old.close()
        logger.info("FLV room=%s video %dx%d", self.room, width, height)
        tags = muxer.mux(data, ms, True)  # the sequence header appears with the first packet
        self.publish_header()
        glue = b""
        if old is not None and muxer.sequence_header is not None:
            glue = retime(muxer.sequence_header, ms).data
        self._append_video(tags, glue)
        return True

    def _append_video(self, tags: list[Tag], glue: bytes) -> None:
        for tag in tags:
            self._last_video_ms = max(self._last_video_ms, tag.timestamp)
            if tag.keyframe:
                self.keyframes += 1
                self._last_keyframe = time.monotonic()
            self.log.append(Entry(glue + tag.data, tag.timestamp, tag.keyframe))
            glue = b""

    def publish_header(self) -> None:
        if self._direct is not None:
            video = self._video_muxer if self._mix is not _Mix.OFF else None
            audio = self._audio_muxer if self.mixed_audio else None
            self.log.header = self._direct.header(
                video.sequence_header.data if video and video.sequence_header else None,
                audio.sequence_header.data if audio and audio.sequence_header else None)
            return
        # only audio that has come is announced: a reader told of audio waits for it (ffprobe
        # ~10 s) when the anchor's offer had an audio section but nothing is sent on it
        has_audio = self._audio_muxer is not None and self.audio is not None \
            and self.audio.packets > 0
        self._announced_audio = has_audio
        parts = [file_header(audio=has_audio, video=self.video is not None)]
        for muxer in (self._video_muxer, self._audio_muxer if has_audio else None):
            if muxer is not None and muxer.sequence_header is not None:
                parts.append(muxer.sequence_header.data)
        self.log.header = b"".join(parts)

    # --- an anchor's own FLV tags (RTMP; see sfu/flv/direct.py) ------------------------------

    def mixing_input_wanted(self) -> bool:
        return self._mix_worker is not None

    def direct_video(self, data: bytes, ms: int, keyframe: bool) -> bool:
        """The anchor's tag, unless the mix replaces it; a keyframe ends a stopping mix (its
        sequence header goes first again). True when it went out."""
        if self._mix is _Mix.MIXING or self.closed:
            return False
        if self._mix is _Mix.STOPPING:
            if not keyframe or self._direct is None:
                return False
            self._close_mixer()
            self._video_muxer = None
            data = self._direct.sequence_header_tag(ms) + data
            self.publish_header()
        self._append_video([Tag(data, TAG_VIDEO, max(ms, self._last_video_ms), keyframe, False)],
                           b"")
        return True

    def _on_aac(self, packets: list[AacPacket]) -> None:
        muxer = self._audio_muxer
        if muxer is None or self.closed:
            return
        if self._direct is not None:
            self._on_mixed_aac(muxer, packets)
            return
        if self.video is not None and self._video_muxer is None:
            return  # the stream starts at the first video keyframe
        for packet in packets:
            for tag in muxer.mux(packet.data, packet.timestamp_ms, False):
                data = tag.data
                if not self._announced_audio and muxer.sequence_header is not None:
                    # the first audio (an audio-only room, or audio after the header went
                    # out): joiners' header announces it; readers already in get its config
                    glue = bool(self.log.header)
                    self.publish_header()
                    if glue:
                        data = retime(muxer.sequence_header, tag.timestamp).data + data
                self.log.append(Entry(data, tag.timestamp, self.video is None))

    def _on_mixed_aac(self, muxer: StreamMuxer, packets: list[AacPacket]) -> None:
        """An RTMP anchor's room with co-hosts: the mix's AAC replaces the anchor's own from
        its first packet on (its config glued before it), until the mix stops."""
        if self._mix is _Mix.OFF:
            return
        for packet in packets:
            for tag in muxer.mux(packet.data, packet.timestamp_ms, False):
                data = tag.data
                if not self.mixed_audio and muxer.sequence_header is not None:
                    self.mixed_audio = True
                    data = retime(muxer.sequence_header, tag.timestamp).data + data
                    self.publish_header()
                self.log.append(Entry(data, tag.timestamp, False))

    # --- readers and housekeeping -------------------------------------------------------------

    def add_reader(
        self, transport: Transport, on_closed: Any, unsent: Callable[[], int] | None = None,
        identity: str = "",
    ) -> FlvReader:
        """A new HTTP-FLV response from the GOP cache (or the next keyframe); ``identity`` (its
        token's) lets a ban or kick end it (``end_identity``)."""
        def closed(reader: FlvReader) -> None:
            self.book.remove(reader)
            on_closed(reader)

        reader = FlvReader(
            self.log,
            transport,
            budget_ms=self.settings.latency_budget_ms,
            stuck_timeout_s=self.settings.stuck_timeout_ms / 1000,
            request_keyframe=self.request_keyframe,
            on_closed=closed,
            unsent=unsent,
        )
        self.book.add(reader, identity)
        reader.join()
        return reader

    def end_identity(self, identity: str, reason: str = "kicked") -> int:
        """End the responses of ``identity`` (banned or kicked); return how many. FLV readers
        are not sessions, so the control plane's kick reaches them through here."""
        ended = self.book.of_identity(identity)
        for reader in ended:
            reader.close(reason)
        return len(ended)

    def request_keyframe(self) -> None:
        """From a joiner or a skipping reader: the publisher (throttled) or our transcoder."""
        if self._transcoder is not None:
            self._force_keyframe = True
        if self.video is not None:
            self.video.request_keyframe()

    async def _tick(self) -> None:
        interval = self.settings.flush_interval_ms / 1000
        keyframe_every = self.settings.keyframe_period_ms / 1000
        next_refresh = 0.0
        while not self.closed:
            now = time.monotonic()
            if now >= next_refresh:
                next_refresh = now + CLOCK_REFRESH_S
                for clock in self._clocks:
                    clock.refresh()
            if keyframe_every > 0 and now - self._last_keyframe >= keyframe_every:
                self._last_keyframe = now  # one request per interval, answered or not
                self.request_keyframe()
            self.log.trim()
            for reader in list(self.readers):
                try:
                    reader.flush()
                except Exception:  # one broken reader must not stop the others
                    logger.exception("FLV reader failed; dropping it")
                    reader.close("error")
            await asyncio.sleep(interval)

    def close(self) -> None:
        """The publisher left: stop feeding, end every reader's response."""
        if self.closed:
            return
        self.closed = True
        self._task.cancel()
        for producer, sink in self._sinks:
            producer.detach(sink)
        if self._direct is not None:
            self._direct.close()
        for cohost in self._cohosts.values():
            cohost.detach()
        self._cohosts.clear()
        self._close_mixer()
        for worker in (self._transcoder, self._aac):
            if worker is not None:
                worker.close()
        for reader in list(self.readers):
            reader.flush()
            reader.close("ended")
        for muxer in (self._video_muxer, self._audio_muxer):
            if muxer is not None:
                with contextlib.suppress(Exception):
                    muxer.close()

    def stats(self) -> dict[str, Any]:
        return {
            **self.book.stats(),
            "keyframes": self.keyframes,
            "tags": self.log.appended,
            "gop_age_ms": self.log.gop_age_ms(),
            "codec_busy_s": self._past_mixer_busy + sum(
                w.busy_s for w in (self._transcoder, self._aac, self._mix_worker) if w is not None
            ),
            "mixing": self._mix is not _Mix.OFF,
            "mixer_cpu_s": self._past_mixer_cpu + self._opus_to_aac.mix_cpu_s
            + (self._mixer.cpu_s if self._mixer is not None else 0.0),
        }
