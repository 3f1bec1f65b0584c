"""WHIP publisher and WHEP viewer clients on aiortc, speaking only public HTTP + WebRTC.

A viewer either decodes video (to read painted capture times: glass-to-glass latency) or only
counts RTP packets: its jitter buffers are swapped for counters so no frame reaches a decoder,
which keeps a load generator's own CPU per viewer small (SRTP + parse + NACK/RR, no codec).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from common.tasks import stop_task
from loadtest.counters import CountingJitterBuffer, install_counter
from loadtest.events_client import EventsClient
from loadtest.media import latency_ms, now_ms, pin_video_bitrate, read_painted

log = logging.getLogger("loadtest.clients")

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
GATHER_TIMEOUT_S = 10.0
MAX_CLIENT_SECONDS = 3600.0  # a reader loop never outlives this
MAX_LATENCY_SAMPLES = 200_000
_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


class SignalingError(Exception):
    """A WHIP/WHEP request that did not return 201, with the server's JSON error if it sent one."""

    def __init__(self, status: int, code: str, message: str, url: str) -> None:
        super().__init__(f"{url}: HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.url = status, code, message, url


def loopback_only() -> None:
    """Gather ICE host candidates on 127.0.0.1 only (aioice skips loopback by default).

    Process-wide. Left alone if something else (e.g. an in-process server) already replaced
    aioice's address lister, so we never narrow its choice.
    """
    if aioice.ice.get_host_addresses is not _ORIGINAL_HOST_ADDRESSES:
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = get_host_addresses


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def _codec_preferences(kind: str, prefer: str, only: bool) -> list[Any]:
    """Capabilities with `prefer` first (and, if `only`, nothing else but rtx)."""
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    name = prefer.lower()
    first = [c for c in codecs if c.mimeType.lower() == f"{kind}/{name}"]
    if name == "h264":  # Constrained Baseline first: what the SFU remuxes to FLV
        first.sort(key=lambda c: c.parameters.get("profile-level-id") != "42e01f")
    rtx = [c for c in codecs if c.mimeType.lower() == f"{kind}/rtx"]
    rest = [c for c in codecs if c not in first and c not in rtx]
    if not first:
        raise ValueError(f"no {kind} codec named {prefer!r}")
    return first + rtx if only else first + rest + rtx


async def _negotiate(
    pc: RTCPeerConnection, url: str, token: str, session: aiohttp.ClientSession | None
) -> str:
    """Offer (candidates complete), POST it, apply the answer; returns the absolute resource URL."""
    gathered = asyncio.Event()

    @pc.on("icegatheringstatechange")
    def _on_gathering() -> None:
        if pc.iceGatheringState == "complete":
            gathered.set()

    # aiortc gathers every candidate inside setLocalDescription (no trickle); bound it anyway.
    async with asyncio.timeout(GATHER_TIMEOUT_S):
        await pc.setLocalDescription(await pc.createOffer())
        if pc.iceGatheringState != "complete":
            await gathered.wait()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    own = session is None
    http = session or aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
    target = url
    try:
        # Redirects by hand: a multi-node front door answers 307 to the room's node, and
        # aiohttp drops Authorization when it follows a redirect to another origin.
        for _hop in range(6):
            async with http.post(target, data=pc.localDescription.sdp, headers=headers,
                                 allow_redirects=False) as resp:
                body = await resp.text()
                moved = resp.headers.get("Location") if resp.status in (307, 308) else None
            if moved is None:
                break
            target = urljoin(target, moved)
        else:
            raise SignalingError(resp.status, "too_many_redirects", "more than 5 redirects", url)
        if resp.status != 201:
            code, message = "http_error", body[:500]
            with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                err = json.loads(body)["error"]
                code, message = str(err.get("code")), str(err.get("message"))
            raise SignalingError(resp.status, code, message, target)
        location = resp.headers.get("Location")
        if not location:
            raise SignalingError(201, "no_location", "201 without a Location header", target)
        resource = urljoin(target, location)  # relative to the node that answered
    finally:
        if own:
            await http.close()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    except BaseException:
        await _delete(resource, token, session)  # no half-made session left on the server
        raise
    return resource


async def _delete(url: str | None, token: str, session: aiohttp.ClientSession | None) -> int | None:
    """DELETE the WHIP/WHEP resource; the status, or None if it could not be reached."""
    if not url:
        return None
    own = session is None
    http = session or aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
    try:
        async with http.delete(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.debug("DELETE %s failed: %s", url, exc)
        return None
    finally:
        if own:
            await http.close()


class _Peer:
    """What publishers and viewers share: the pc, its resource URL, connection timing."""

    def __init__(
        self, pc: RTCPeerConnection, token: str, session: aiohttp.ClientSession | None
    ) -> None:
        self.pc = pc
        self.resource_url: str | None = None
        self.delete_status: int | None = None  # what the server said to our DELETE
        self._token = token
        self.started_at = time.monotonic()
        self.connected_at: float | None = None
        self.failed = False
        self._connected = asyncio.Event()
        self._session = session
        self._closed = False
        self.events: EventsClient | None = None  # the ``events`` data channel, if asked for

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()
                self._connected.set()
            elif pc.connectionState == "failed":
                self.failed = True
                self._connected.set()

    async def wait_connected(self, seconds: float = 10.0) -> bool:
        """True once ICE+DTLS are up; False on failure or after `seconds`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), seconds)
        return self.connected_at is not None and not self.failed

    async def close(self) -> None:
        """DELETE the resource, then close the peer connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._stop_tasks()
        self.delete_status = await _delete(self.resource_url, self._token, self._session)
        await self.pc.close()

    async def _stop_tasks(self) -> None:
        pass


class Publisher(_Peer):
    """A WHIP session; `video_encoder` is the pinned-bitrate encoder (its `last_remb` is kept)."""

    video_encoder: Any = None


async def publish(
    base_url: str,
    room: str,
    token: str,
    video_track: MediaStreamTrack | None,
    audio_track: MediaStreamTrack | None,
    *,
    prefer: str = "H264",
    video_bitrate: int | None = 600_000,
    session: aiohttp.ClientSession | None = None,
    low_video_track: MediaStreamTrack | None = None,
    low_video_bitrate: int = 150_000,
) -> Publisher:
    """Publish over WHIP: sendonly transceivers, video forced to `prefer` (+rtx), audio Opus.
    ``low_video_track`` is sent as a second video section after the audio: the slot's low
    layer (sfu/layers.py)."""
    if _is_loopback(base_url):
        loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pub = Publisher(pc, token, session)
    try:
        if video_track is not None:
            tr = pc.addTransceiver(video_track, direction="sendonly")
            tr.setCodecPreferences(_codec_preferences("video", prefer, only=True))
            if video_bitrate:
                pub.video_encoder = pin_video_bitrate(tr.sender, video_bitrate, prefer)
        if audio_track is not None:
            tr = pc.addTransceiver(audio_track, direction="sendonly")
            tr.setCodecPreferences(_codec_preferences("audio", "opus", only=True))
        if low_video_track is not None:
            tr = pc.addTransceiver(low_video_track, direction="sendonly")
            tr.setCodecPreferences(_codec_preferences("video", prefer, only=True))
            pin_video_bitrate(tr.sender, low_video_bitrate, prefer)
        url = f"{base_url.rstrip('/')}/whip/{room}"
        pub.resource_url = await _negotiate(pc, url, token, session)
    except BaseException:
        await pc.close()
        raise
    return pub


class Viewer(_Peer):
    """A WHEP session with counters; `frames` are decoded frames (decode) or marker bits (not)."""

    def __init__(
        self, pc: RTCPeerConnection, token: str, session: aiohttp.ClientSession | None
    ) -> None:
        super().__init__(pc, token, session)
        self.decode = False
        self.video: CountingJitterBuffer | None = None
        self.audio: CountingJitterBuffer | None = None
        self.decoded = 0
        self.painted = 0  # decoded frames whose strip was read
        self.frame_gaps = 0  # painted frame numbers skipped
        self.first_decoded_at: float | None = None
        self.latencies_ms: list[int] = []
        self.latency_at: list[float] = []  # monotonic time of each latency sample
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_no: int | None = None

    @property
    def packets(self) -> int:
        return sum(b.stream.packets for b in (self.video, self.audio) if b)

    @property
    def lost(self) -> int:
        return sum(b.stream.lost for b in (self.video, self.audio) if b)

    @property
    def frames(self) -> int:
        if self.decode:
            return self.decoded
        return self.video.stream.frames if self.video else 0

    @property
    def first_frame_at(self) -> float | None:
        """First decoded frame; without decoding, first keyframe packet (H.264) or packet."""
        if self.decode or self.video is None:
            return self.first_decoded_at
        s = self.video.stream
        return s.first_keyframe_at if self.video.h264_payload_types else s.first_at

    def _on_decoded(self, frame: av.VideoFrame) -> None:
        self.decoded += 1
        now = time.monotonic()
        if self.first_decoded_at is None:
            self.first_decoded_at = now
        painted = read_painted(frame)
        if painted is None:
            return
        capture_ms, frame_no = painted
        self.painted += 1
        if len(self.latencies_ms) < MAX_LATENCY_SAMPLES:
            self.latencies_ms.append(latency_ms(capture_ms, now_ms()))
            self.latency_at.append(now)
        if self._last_no is not None:
            self.frame_gaps += max(0, ((frame_no - self._last_no) & 0xFFFF) - 1)
        self._last_no = frame_no

    async def _read(
        self, track: MediaStreamTrack, on_frame: Callable[[av.VideoFrame], Any] | None
    ) -> None:
        deadline = time.monotonic() + MAX_CLIENT_SECONDS
        while (left := deadline - time.monotonic()) > 0 and not self._stopping:
            try:
                frame = await asyncio.wait_for(track.recv(), left)
            except (MediaStreamError, TimeoutError):
                return
            if not isinstance(frame, av.VideoFrame):
                continue
            self._on_decoded(frame)
            if on_frame is not None:
                on_frame(frame)

    async def _stop_tasks(self) -> None:
        """Stop the frame reader. Python 3.11's wait_for can swallow a cancel that lands as a
        frame arrives, so the reader also checks a flag, and ``stop_task`` repeats the cancel
        (bounded): a swallowed cancel once kept close() waiting forever."""
        self._stopping = True
        await stop_task(self._task)
        self._drop_decoder_backlog()

    def _drop_decoder_backlog(self) -> None:
        """aiortc's receiver stop joins its decoder thread synchronously, after the thread has
        decoded everything queued: on a starved machine that blocked the event loop for up to
        a minute. Stop feeding the decoder and drop its queue first, so close is prompt."""
        if self.video is not None:
            self.video.decode = False
        for transceiver in self.pc.getTransceivers():
            backlog = getattr(transceiver.receiver, "_RTCRtpReceiver__decoder_queue", None)
            if backlog is not None:
                with backlog.mutex:
                    backlog.queue.clear()

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary of this viewer."""
        out: dict[str, Any] = {
            "decode": self.decode,
            "frames": self.frames,
            "packets": self.packets,
            "lost": self.lost,
            "connected_s": _since(self.started_at, self.connected_at),
            "first_frame_s": _since(self.started_at, self.first_frame_at),
        }
        for name, buf in (("video", self.video), ("audio", self.audio)):
            if buf is not None:
                s = buf.stream
                out[name] = {k: getattr(s, k) for k in _COUNTER_FIELDS} | {
                    "first_packet_s": _since(self.started_at, s.first_at),
                    "first_keyframe_s": _since(self.started_at, s.first_keyframe_at),
                }
        if self.decode:
            out.update(decoded=self.decoded, painted=self.painted, frame_gaps=self.frame_gaps)
        return out


_COUNTER_FIELDS = (
    *("packets", "unique", "expected", "lost", "late", "duplicates", "gaps", "bytes"),
    *("frames", "starts_with_keyframe"),
)


async def flv_url(base_url: str, room: str, token: str,
                  session: aiohttp.ClientSession | None = None) -> str:
    """The room's HTTP-FLV URL from its playback plan, as a viewer page gets it: with a ticket
    that starts a stream within a minute (a server takes ``?token=`` only with
    ``--flv-plain-token``)."""
    own = session is None
    http = session if session is not None else aiohttp.ClientSession()
    try:
        async with http.get(f"{base_url.rstrip('/')}/api/v1/rooms/{room}/playback",
                            headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status != 200:
                raise SignalingError(response.status, "playback", await response.text(),
                                     str(response.url))
            url: str = (await response.json())["flv_url"]
            return url
    finally:
        if own:
            await http.close()


def _since(start: float, at: float | None) -> float | None:
    return None if at is None else round(at - start, 4)


async def play(
    base_url: str,
    room: str,
    token: str,
    *,
    decode: bool = True,
    on_frame: Callable[[av.VideoFrame], Any] | None = None,
    prefer: str = "H264",
    session: aiohttp.ClientSession | None = None,
    events: bool = False,
    slot: int = 0,
    quality: str | None = None,
) -> Viewer:
    """Watch over WHEP: recvonly audio+video; decode video (latency) or just count packets.

    Audio is never decoded (counted only): the probe measures video, and an unread decoded
    track would queue without bound. ``slot`` picks the publisher (0 the anchor, 1.. co-hosts):
    the sections before it are offered and left unread.
    """
    if _is_loopback(base_url):
        loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer = Viewer(pc, token, session)
    viewer.decode = decode
    try:
        for _ in range(slot):
            pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
                _codec_preferences("video", prefer, only=False))
            pc.addTransceiver("audio", direction="recvonly")
        video: RTCRtpTransceiver = pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(_codec_preferences("video", prefer, only=False))
        audio = pc.addTransceiver("audio", direction="recvonly")
        viewer.video = install_counter(video.receiver, "video", decode)
        viewer.audio = install_counter(audio.receiver, "audio", False)
        if events:
            viewer.events = EventsClient(pc)
        url = f"{base_url.rstrip('/')}/whep/{room}"
        if quality is not None:  # the video layer to be sent (sfu/layers.py)
            url += f"?quality={quality}"
        viewer.resource_url = await _negotiate(pc, url, token, session)
        viewer.video.h264_payload_types = {
            c.payloadType
            for c in video._codecs
            if c.payloadType is not None and c.mimeType.lower() == "video/h264"
        }
        if decode:
            viewer._task = asyncio.ensure_future(viewer._read(video.receiver.track, on_frame))
    except BaseException:
        await pc.close()
        raise
    return viewer
