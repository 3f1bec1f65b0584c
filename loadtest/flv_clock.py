"""An HTTP-FLV reader that reads the painted clock (loadtest.media) off every video frame.

Unlike loadtest.flv_probe's player model (a playback clock with a buffer, keyframes decoded),
this reader decodes every video tag as soon as it has arrived: its latency is glass-to-glass
to the moment the picture is decoded, comparable with a decoding WebRTC viewer's
(loadtest.clients.play). Decoding runs on a thread of its own per reader, so a slow decode never
delays the socket reads of the other clients of the process.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import av

from loadtest.media import latency_ms, now_ms, read_painted

MAX_PENDING_DECODES = 60  # a reader whose decoder is further behind than this drops tags
MAX_SAMPLES = 200_000
MAX_READER_S = 3600.0  # a reader never outlives this
FLV_HEADER = 13  # file header (9) + the first previous-tag-size (4)


class FlvTags:
    """Splits an HTTP-FLV byte stream into (tag type, timestamp ms, body) as bytes arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header = False

    def feed(self, chunk: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += chunk
        if not self._header:
            if len(buf) < FLV_HEADER:
                return []
            del buf[:FLV_HEADER]
            self._header = True
        tags = []
        while len(buf) >= 11:
            size = int.from_bytes(buf[1:4], "big")
            if len(buf) < 11 + size + 4:
                break
            ts = int.from_bytes(buf[4:7], "big") | (buf[7] << 24)
            tags.append((buf[0] & 0x1F, ts, bytes(buf[11 : 11 + size])))
            del buf[: 11 + size + 4]
        return tags


class FlvClock:
    """An HTTP-FLV reader that decodes every video tag as it arrives (a player with no buffer)
    and reads the painted capture time: glass-to-glass to the moment the picture is decoded.
    Decoding runs on one thread of its own, so a slow decode never delays the socket reads
    of the other clients in this process."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.status = 0
        self.ended = ""
        self.video_tags = self.decoded = self.painted = self.dropped = self.headers = 0
        self.latencies: list[tuple[float, int]] = []  # (monotonic, ms)
        self.decode_ms: list[float] = []  # time in the decoder per video tag
        self._submitted = self._done = 0
        self._tags = FlvTags()
        self._decoder: Any = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="flv-clock")
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def feed(self, chunk: bytes) -> None:
        """Bytes of the response as they arrive; video tags go to the decoding thread."""
        for kind, _ts, body in self._tags.feed(chunk):
            self._tag(kind, body)

    def close(self, wait: bool = False) -> None:
        """Stop decoding (``wait``: after what is queued, else dropping it)."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    async def run(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.url) as resp:
                self.status = resp.status
                if resp.status != 200:
                    self.ended = f"http {resp.status}"
                    return
                stop = asyncio.ensure_future(self._stop.wait())
                deadline = time.monotonic() + MAX_READER_S
                try:
                    while not self._stop.is_set() and time.monotonic() < deadline:
                        read = asyncio.ensure_future(resp.content.readany())
                        await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                        if not read.done():
                            read.cancel()
                            break
                        chunk = read.result()
                        if not chunk:
                            self.ended = "eof"
                            break
                        self.feed(chunk)
                finally:
                    stop.cancel()
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.ended = f"error: {type(exc).__name__}"
        finally:
            self.close()

    def _tag(self, kind: int, body: bytes) -> None:
        if kind != 9 or len(body) < 5:
            return
        if body[1] == 0:  # AVC sequence header: a (new) decoder configuration
            self.headers += 1
            self._pool.submit(self._configure, body[5:])
            return
        if body[1] != 1:
            return
        self.video_tags += 1
        if self._submitted - self._done > MAX_PENDING_DECODES:
            self.dropped += 1
            return
        self._submitted += 1
        self._pool.submit(self._decode, body[5:])

    def _configure(self, avcc: bytes) -> None:
        decoder: Any = av.CodecContext.create("h264", "r")
        decoder.extradata = avcc
        decoder.thread_count = 1  # frame threads would hold frames back
        self._decoder = decoder

    def _decode(self, nalus: bytes) -> None:
        try:
            if self._decoder is None:
                return
            t0 = time.perf_counter()
            frames = self._decoder.decode(av.Packet(nalus))
            if len(self.decode_ms) < MAX_SAMPLES:
                self.decode_ms.append(1000 * (time.perf_counter() - t0))
            for frame in frames:
                self.decoded += 1
                painted = read_painted(frame)
                if painted is not None:
                    self.painted += 1
                    self.latencies.append((time.monotonic(), latency_ms(painted[0], now_ms())))
        except av.FFmpegError:
            pass
        finally:
            self._done += 1
