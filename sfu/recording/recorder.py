"""One room's recording: a reader of the room's FLV output, without a socket, remuxed to MP4.

The recorder is an ``FlvReader`` of the output's tag log like an HTTP-FLV response, with
itself as the transport: it joins at the GOP cache's keyframe (or the next one), gets the
header and every tag after it in order, whatever the source (the anchor's remuxed H.264, an
RTMP encoder's own tags, the co-host mix), and hands them to ``Mp4Remux`` on the event loop
(about 10 us per tag; ``busy_s`` measures it). Its budget is the whole log, so it is never
skipped ahead while the loop keeps up.

The MP4 starts once the stream's codecs are known: the video sequence header and a keyframe,
and the AAC config (an anchor's audio may be announced a moment after its video; past
``AUDIO_WAIT_MS`` of video the recording starts without it). A new AAC config mid-recording
cannot go in an MP4 track: the recording ends (``ended = "restart"``) and the manager
starts the next one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path

import av

from sfu.errors import MediaError
from sfu.flv.muxer import TAG_AUDIO, TAG_VIDEO, split_tags
from sfu.flv.output import RoomFlvOutput
from sfu.flv.viewer_queue import FlvReader
from sfu.recording.mp4 import Mp4Remux
from sfu.recording.segments import SegmentFiles
from signaling.recordings_index import RecordingMeta, Segment

logger = logging.getLogger("shopcast.sfu.recording")

AUDIO_WAIT_MS = 3000
AVC = 7
AAC = 10


class RoomRecorder:
    """Records ``output`` into ``folder`` as ``meta`` describes (one per recording)."""

    def __init__(self, meta: RecordingMeta, output: RoomFlvOutput, folder: Path,
                 segment_s: float) -> None:
        self.meta = meta
        self.output = output
        self.folder = folder
        self.segment_s = segment_s
        self.ended = ""  # why the recording must end; "" while it goes on
        self.changed = False  # meta moved since the index last got it
        self.busy_s = 0.0  # CPU time spent remuxing, on the event loop
        self._files: SegmentFiles | None = None
        self._remux: Mp4Remux | None = None
        self._video_header: bytes | None = None
        self._audio_header: bytes | None = None
        self._waiting: list[tuple[int, bytes, int]] = []  # (kind, body, ms) before the start
        self._segment_start_ms = 0
        self._reader = FlvReader(
            output.log, self, budget_ms=output.log.keep_ms, stuck_timeout_s=math.inf,
            request_keyframe=output.request_keyframe, on_closed=self._reader_closed,
            chunked=False,
        )

    @property
    def started(self) -> bool:
        return self._remux is not None

    def start(self) -> None:
        self._reader.join()

    def poll(self) -> None:
        """On the manager's tick: take what the log has for us."""
        if not self.ended:
            self._reader.flush()  # what is left in the log, also when the output just closed
        if self.output.closed and not self.ended:
            self.ended = "publisher_left"
        if self._files is not None and self._files.disk.failed and not self.ended:
            self.ended = self._files.disk.failed

    # --- the reader's transport -------------------------------------------------------------

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def write(self, data: bytes) -> None:
        began = time.thread_time()  # CPU time: what the remux costs, not waits for a core
        try:
            _, tags = split_tags(data)
            for tag in tags:
                self._tag(tag.kind, tag.data[11:-4], tag.timestamp)
                if self.ended:
                    break
        except (MediaError, ValueError, av.FFmpegError) as exc:
            logger.warning("recording %s room=%s stopped: %s", self.meta.id, self.meta.room, exc)
            self.ended = "error"
        self.busy_s += time.thread_time() - began

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return bool(self.ended)

    def abort(self) -> None:
        pass

    def _reader_closed(self, reader: FlvReader) -> None:
        self.ended = self.ended or reader.close_reason

    # --- tags -------------------------------------------------------------------------------

    def _tag(self, kind: int, body: bytes, ms: int) -> None:
        if len(body) < 2:
            return
        if kind == TAG_VIDEO and body[0] & 0x0F == AVC:
            if body[1] == 0:
                self._on_video_header(body)
            elif body[1] == 1:
                self._media(kind, body, ms)
        elif kind == TAG_AUDIO and body[0] >> 4 == AAC:
            if body[1] == 0:
                self._on_audio_header(body)
            else:
                self._media(kind, body, ms)

    def _on_video_header(self, body: bytes) -> None:
        if self._remux is None:
            self._video_header = body
        elif self._remux.has_video:
            self._remux.video_config(body)

    def _on_audio_header(self, body: bytes) -> None:
        if self._remux is None:
            self._audio_header = body
        elif self._remux.audio_config != body[2:]:
            self.ended = "restart"  # another AAC config: the next recording takes it

    def _media(self, kind: int, body: bytes, ms: int) -> None:
        if self._remux is not None:
            self._write(kind, body, ms)
            return
        keyframe = kind == TAG_VIDEO and body[0] >> 4 == 1
        if kind == TAG_VIDEO and not self._waiting_video() and not keyframe:
            return
        if keyframe and not self._waiting_video():
            self._waiting.clear()  # audio alone so far: the recording starts at the picture
        self._waiting.append((kind, body, ms))
        span = ms - self._waiting[0][2]
        has_video = self._video_header is not None and self._waiting_video()
        if (has_video and self._audio_header is not None) or span >= AUDIO_WAIT_MS:
            self._begin()

    def _waiting_video(self) -> bool:
        return bool(self._waiting) and self._waiting[0][0] == TAG_VIDEO

    def _begin(self) -> None:
        first_kind, first_body, origin = self._waiting[0]
        video = self._video_header if first_kind == TAG_VIDEO else None
        lag_ms = self.output.log.newest_timestamp - origin
        self.meta.started_at = time.time() - max(lag_ms, 0) / 1000
        self.meta.segments = [Segment(0, 0.0)]
        self._files = SegmentFiles(self.folder, self._on_segment)
        self._remux = Mp4Remux(self._files, video, self._audio_header,
                               first_body if video is not None else None, origin)
        self._segment_start_ms = 0
        waiting, self._waiting = self._waiting, []
        for kind, body, ms in waiting:
            self._write(kind, body, ms)
        logger.info("recording %s room=%s started (video=%s audio=%s)", self.meta.id,
                    self.meta.room, video is not None, self._audio_header is not None)

    def _write(self, kind: int, body: bytes, ms: int) -> None:
        remux = self._remux
        assert remux is not None
        if not remux.media(kind, body, ms):
            return
        at_cut = (kind == TAG_VIDEO and body[0] >> 4 == 1) or not remux.has_video
        elapsed_ms = ms - remux.origin_ms - self._segment_start_ms
        if at_cut and elapsed_ms >= self.segment_s * 1000:
            self._segment_start_ms = ms - remux.origin_ms  # this keyframe's fragment opens it
            remux.cut_at(self._segment_start_ms)
        self._refresh(remux.end_ms)

    def _on_segment(self, index: int) -> None:
        self.meta.segments.append(Segment(index, self._segment_start_ms / 1000))
        self.changed = True

    def _refresh(self, end_ms: int) -> None:
        files = self._files
        assert files is not None
        meta = self.meta
        meta.duration_s = end_ms / 1000
        meta.bytes = files.bytes
        meta.init_bytes = len(files.init)
        last = meta.segments[-1]
        last.bytes = files.segment_bytes
        last.duration_s = max(meta.duration_s - last.start_s, 0.0)
        if len(meta.segments) > 1:
            previous = meta.segments[-2]
            previous.duration_s = last.start_s - previous.start_s
        self.changed = True

    async def written(self) -> None:
        """Once ``finish`` returned: until every byte is on disk (the writer's thread ends)."""
        if self._files is not None:
            await asyncio.to_thread(self._files.disk.join)

    def finish(self) -> RecordingMeta | None:
        """Write the last fragment and close; the final meta, or None if nothing was
        recorded (no keyframe ever came)."""
        if not self.ended:
            self.ended = "stopped"
        if not self._reader.closed:
            self._reader.close("stopped")
        remux = self._remux
        if remux is None:
            if self._files is not None:
                self._files.close()
            return None
        try:
            remux.close()
        except av.FFmpegError as exc:
            logger.warning("recording %s: closing failed: %s", self.meta.id, exc)
        self._refresh(remux.end_ms)
        if self._files is not None:
            self.meta.bytes = self._files.bytes
            self.meta.segments[-1].bytes = self._files.segment_bytes
        self.meta.finished = True
        logger.info("recording %s room=%s finished (%s): %.1f s, %d bytes, %d segments",
                    self.meta.id, self.meta.room, self.ended, self.meta.duration_s,
                    self.meta.bytes, len(self.meta.segments))
        return self.meta

