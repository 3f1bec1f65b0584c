"""The one place that reaches into aiortc's and aioice's private names.

aiortc has no pass-through API: forwarding RTP without decoding means taking packets from a
receiver's jitter buffer slot, protecting and sending on a viewer's SRTP session and ICE socket
ourselves, and answering viewers' RTCP in place of aiortc's sender. Every private attribute,
method or module global that the SFU touches is reached through a function here, named for what
it does; nothing else in ``sfu`` writes ``._`` on an aiortc object. The two process-wide patches
(lazy rate counters, chosen ICE host addresses) are explicit ``install_*`` steps.

These names are not a contract, so the SFU is pinned to the aiortc it was built for
(``BUILT_FOR``) and ``check()`` verifies, once per process at start-up, that each one is still
there: methods on the classes, the names those methods must still use (read from their
bytecode), and instance attributes on a throwaway peer connection (nothing gathered, no socket).
A missing one stops ``shopcast serve`` with its name instead of a node that forwards nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aioice.ice
from aiortc import (
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    rate,
)
from aiortc.rtp import AnyRtcpPacket, RtpPacket

BUILT_FOR = "1.16.0"
AIOICE_BUILT_FOR = "0.13.0"

RtcpHandler = Callable[[AnyRtcpPacket], Awaitable[None]]
HostAddresses = Callable[[bool, bool], list[str]]


class AiortcIncompatible(RuntimeError):
    """The installed aiortc lacks a private name the SFU relies on."""


class JitterBufferTap(Protocol):
    """What a receiver calls for each packet after RTX unwrap: (send a PLI?, frame or None)."""

    def add(self, packet: RtpPacket) -> tuple[bool, None]: ...


# --- publisher leg (RTCRtpReceiver) ---


def jitter_buffer_tap(receiver: RTCRtpReceiver, tap: JitterBufferTap) -> None:
    """Put ``tap`` where the receiver keeps its jitter buffer: it gets every packet and no
    frame ever reaches the decoder. Raises rather than set an attribute nothing reads."""
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        raise AiortcIncompatible(_message([_readable("_RTCRtpReceiver__jitter_buffer", "")]))
    receiver._RTCRtpReceiver__jitter_buffer = tap


def observe_receiver_rtcp(
    receiver: RTCRtpReceiver, observe: Callable[[AnyRtcpPacket], None]
) -> None:
    """Show each RTCP packet the publisher sends for this receiver to ``observe``, then let
    aiortc handle it as before (its RR, NACK and REMB bookkeeping)."""
    original: RtcpHandler = receiver._handle_rtcp_packet

    async def handle(packet: AnyRtcpPacket) -> None:
        observe(packet)
        await original(packet)

    receiver._handle_rtcp_packet = handle  # type: ignore[method-assign]


class ReceiveStatistics(Protocol):
    """aiortc's per-SSRC receive statistics (RFC 3550 A.3, A.8), as its receiver reports use."""

    packets_received: int
    max_seq: int | None

    @property
    def packets_expected(self) -> int: ...

    @property
    def jitter(self) -> int: ...


def receive_statistics(receiver: RTCRtpReceiver) -> list[ReceiveStatistics]:
    """The receiver's statistics of its media SSRCs (retransmission SSRCs left out, so loss
    is counted before NACK recovery); read on a timer, never per packet."""
    streams: dict[int, ReceiveStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    rtx: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
    return [stats for ssrc, stats in list(streams.items()) if ssrc not in rtx]


def remb_estimate(receiver: RTCRtpReceiver) -> int | None:
    """The bitrate (bit/s) the receiver's REMB last asked the publisher for; None before its
    estimator settled (audio receivers have none)."""
    estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator  # type: ignore[attr-defined]
    control = getattr(estimator, "rate_control", None)
    if control is None or not control.current_bitrate_initialized:
        return None
    return int(control.current_bitrate)


def pli_sender(receiver: RTCRtpReceiver) -> Callable[[int], Coroutine[Any, Any, None]]:
    """The receiver's own PLI send (``media_ssrc`` -> coroutine), bound once."""
    send: Callable[[int], Coroutine[Any, Any, None]] = receiver._send_rtcp_pli
    return send


# --- viewer leg (RTCRtpSender, its DTLS and ICE transports) ---


def set_sender_ssrc(sender: RTCRtpSender, ssrc: int) -> None:
    """Before ``createOffer``/answer: every viewer shares the canonical SSRC of a track."""
    sender._ssrc = ssrc


def set_sender_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The ``msid`` stream of this sender (aiortc otherwise puts every sender in one)."""
    sender._stream_id = stream_id


def intercept_sender_rtcp(sender: RTCRtpSender, handler: RtcpHandler) -> RtcpHandler:
    """Route a viewer's RTCP for this sender to ``handler``; returns aiortc's own handler
    (RTT and remote-inbound stats from receiver reports)."""
    original: RtcpHandler = sender._handle_rtcp_packet
    sender._handle_rtcp_packet = handler  # type: ignore[method-assign, assignment]
    return original


async def _no_rtcp(packets: object) -> None:
    """Stands in for a sender's ``_send_rtcp``: its loop (and its BYE at stop) sends nothing."""


def silence_sender_rtcp(sender: RTCRtpSender) -> bool:
    """Stop aiortc's per-sender RTCP: silence it now, end its loop once it runs. True when the
    loop is ended (or ending). A loop cancelled before it started would never flag its exit,
    and aiortc's ``stop()`` waits for that flag, so only a started loop is cancelled."""
    sender._send_rtcp = _no_rtcp  # type: ignore[method-assign]
    task: asyncio.Future[None] | None = sender._RTCRtpSender__rtcp_task  # type: ignore[attr-defined]
    started: asyncio.Event | None = sender._RTCRtpSender__rtcp_started  # type: ignore[attr-defined]
    if task is None or started is None or not started.is_set():
        return False
    if not task.done():
        task.cancel()
    return True


def set_last_sender_report(sender: RTCRtpSender, lsr: int, sent_at: float) -> None:
    """Record an SR we sent for this sender, so aiortc still estimates RTT from the viewer's
    receiver reports (it matches their LSR against these)."""
    sender._RTCRtpSender__lsr = lsr  # type: ignore[attr-defined]
    sender._RTCRtpSender__lsr_time = sent_at  # type: ignore[attr-defined]


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    """The codecs the last negotiation settled on, preferred first (empty before it)."""
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs
    return codecs


def peer_cname(pc: RTCPeerConnection) -> str:
    """The CNAME aiortc put in this connection's SDP and RTCP."""
    cname: str = pc._RTCPeerConnection__cname  # type: ignore[attr-defined]
    return cname


def srtp_protect(dtls: RTCDtlsTransport) -> Callable[[bytes], bytes]:
    """The connected transport's SRTP protect, bound once (the per-packet call itself)."""
    protect: Callable[[bytes], bytes] = dtls._tx_srtp.protect
    return protect


def srtcp_protect(dtls: RTCDtlsTransport) -> Callable[[bytes], bytes]:
    """The connected transport's SRTCP protect, bound once."""
    protect: Callable[[bytes], bytes] = dtls._tx_srtp.protect_rtcp
    return protect


def ice_connection(dtls: RTCDtlsTransport) -> aioice.ice.Connection:
    """The aioice connection under a DTLS transport (its async ``send`` works on any pair)."""
    connection: aioice.ice.Connection = dtls.transport._connection
    return connection


def nominated_pair(dtls: RTCDtlsTransport) -> Any | None:
    """The nominated candidate pair of RTP's component (an aioice ``CandidatePair``, with
    ``protocol`` and ``remote_addr``), or None before ICE completes."""
    return ice_connection(dtls)._nominated.get(1)


def prefer_dtls_server(dtls: RTCDtlsTransport) -> None:
    """Take the DTLS server role when the offer left it to us (``a=setup:actpass``)."""
    if dtls._role == "auto":
        dtls._set_role("server")


# --- process-wide patches, installed once at start-up ---

_AIORTC_RATE_COUNTER = rate.RateCounter
AIOICE_HOST_ADDRESSES: HostAddresses = aioice.ice.get_host_addresses


class LazyRateCounter(_AIORTC_RATE_COUNTER):
    """``aiortc.rate.RateCounter`` whose buckets appear on the first ``add``.

    aiortc gives every video RTCRtpReceiver a RemoteBitrateEstimator whose RateCounter builds
    1000 bucket objects up front. A viewer's transceivers are send-only, yet each still gets a
    receiver: with four publisher slots that is 4000 objects per viewer that never count
    anything, the largest part of creating a viewer's peer connection (4.3-6.5 ms -> 0.8-2.0 ms
    per viewer, 100 viewers in a row), and objects the garbage collector keeps scanning. A
    publisher's receivers count from their first packet, exactly as before.
    """

    def reset(self) -> None:
        self._buckets: list[rate.RateBucket] | None = None  # type: ignore[assignment]
        self._origin_index = 0
        self._origin_ms = None
        self._total = rate.RateBucket()

    def add(self, value: int, now_ms: int) -> None:
        if self._buckets is None:
            self._buckets = [rate.RateBucket() for _ in range(self._window_size)]
        super().add(value, now_ms)


def install_lazy_rate_counter() -> None:
    """Make aiortc build lazy counters (its estimator looks the class up in its module)."""
    rate.RateCounter = LazyRateCounter  # type: ignore[misc]


def install_host_addresses(choose: HostAddresses) -> None:
    """Gather ICE host candidates on ``choose(use_ipv4, use_ipv6)`` (aioice looks the
    function up in its module on each gathering)."""
    aioice.ice.get_host_addresses = choose  # type: ignore[assignment]


# --- the check ---

# (class, method, names its code must still use, what the SFU needs it for)
_METHODS: tuple[tuple[type, str, tuple[str, ...], str], ...] = (
    (RTCRtpReceiver, "_handle_rtp_packet", ("_RTCRtpReceiver__jitter_buffer", "add"),
     "the packet tap"),
    (RTCRtpReceiver, "_handle_rtcp_packet", (), "publisher sender reports"),
    (RTCRtpReceiver, "_send_rtcp_pli", (), "keyframe requests upstream"),
    (RTCRtpSender, "_handle_rtcp_packet", ("_RTCRtpSender__lsr", "_RTCRtpSender__lsr_time"),
     "viewer RTCP and RTT"),
    (RTCRtpSender, "_run_rtcp", ("_send_rtcp", "_RTCRtpSender__rtcp_started"),
     "batched sender reports"),
    (RTCRtpSender, "_send_rtcp", (), "batched sender reports"),
    (RTCDtlsTransport, "_set_role", (), "the DTLS server role"),
    (RTCPeerConnection, "setRemoteDescription", ("_codecs",), "codecs answered as offered"),
    (rate.RemoteBitrateEstimator, "__init__", ("RateCounter",), "lazy rate counters"),
    (_AIORTC_RATE_COUNTER, "__init__", ("_window_size", "reset"), "lazy rate counters"),
    (_AIORTC_RATE_COUNTER, "add", ("_buckets", "_total", "_origin_ms", "_origin_index"),
     "lazy rate counters"),
    (aioice.ice.Connection, "gather_candidates", ("get_host_addresses",), "ICE host addresses"),
)
# (module, global the SFU reads or replaces)
_GLOBALS: tuple[tuple[str, str], ...] = (
    ("aiortc.rate", "RateCounter"),
    ("aiortc.rate", "RateBucket"),
    ("aiortc.codecs", "CODECS"),
    ("aioice.ice", "get_host_addresses"),
)
# instance attributes, looked for on a throwaway peer connection's objects
_INSTANCE: tuple[tuple[str, str], ...] = (
    ("RTCPeerConnection", "_RTCPeerConnection__cname"),
    ("RTCRtpTransceiver", "_codecs"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__jitter_buffer"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__remote_streams"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__rtx_ssrc"),
    ("RTCRtpReceiver", "_RTCRtpReceiver__remote_bitrate_estimator"),
    ("RTCRtpSender", "_ssrc"),
    ("RTCRtpSender", "_stream_id"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_task"),
    ("RTCRtpSender", "_RTCRtpSender__rtcp_started"),
    ("RTCRtpSender", "_RTCRtpSender__lsr"),
    ("RTCRtpSender", "_RTCRtpSender__lsr_time"),
    ("RTCDtlsTransport", "_role"),
    ("RTCDtlsTransport", "_tx_srtp"),
    ("RTCIceTransport", "_connection"),
    ("Connection", "_nominated"),
)

_checked = False


_MANGLED = re.compile(r"^_([A-Za-z]\w*?)__(\w+)$")


def _readable(name: str, owner: str) -> str:
    """``_RTCRtpSender__lsr`` -> ``RTCRtpSender.__lsr``, as aiortc's source spells it."""
    mangled = _MANGLED.match(name)
    return f"{mangled[1]}.__{mangled[2]}" if mangled else f"{owner}.{name}" if owner else name


def _installed(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _message(missing: list[str]) -> str:
    return (
        f"this aiortc ({_installed('aiortc')}, aioice {_installed('aioice')}) lacks "
        f"{', '.join(missing)}: ShopCast forwards media through these private parts of "
        f"aiortc {BUILT_FOR}; install aiortc=={BUILT_FOR} and aioice=={AIOICE_BUILT_FOR}"
    )


def _missing_on_classes() -> list[str]:
    missing: list[str] = []
    for cls, method, uses, _why in _METHODS:
        function = getattr(cls, method, None)
        code = getattr(function, "__code__", None)
        if code is None:
            missing.append(f"{cls.__name__}.{method}")
            continue
        missing += [f"{_readable(name, '')} (used by {cls.__name__}.{method})"
                    for name in uses if name not in code.co_names]
    missing += [f"{module}.{name}" for module, name in _GLOBALS
                if not hasattr(importlib.import_module(module), name)]
    return missing


def _missing_on_instances(pc: RTCPeerConnection) -> list[str]:
    transceiver = pc.addTransceiver("video", direction="sendonly")
    dtls = transceiver.sender.transport
    ice = dtls.transport
    objects = {
        "RTCPeerConnection": pc, "RTCRtpTransceiver": transceiver,
        "RTCRtpReceiver": transceiver.receiver, "RTCRtpSender": transceiver.sender,
        "RTCDtlsTransport": dtls, "RTCIceTransport": ice,
        "Connection": getattr(ice, "_connection", None),
    }
    return [_readable(name, owner) for owner, name in _INSTANCE
            if objects[owner] is None or not hasattr(objects[owner], name)]


async def _probe() -> list[str]:
    pc = RTCPeerConnection()
    try:
        return _missing_on_instances(pc)
    finally:
        await pc.close()


def missing_names() -> list[str]:
    """Every private name the SFU relies on that the installed aiortc/aioice lacks."""
    missing = _missing_on_classes()
    if missing:
        return missing
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(_probe())
        finally:
            loop.close()
    # inside a running loop (an app built in a test): the probe's connection never gathered
    # nor opened a socket, so it is left to the garbage collector unclosed
    return _missing_on_instances(RTCPeerConnection())


def check() -> None:
    """Raise ``AiortcIncompatible`` naming every missing private name; once per process."""
    global _checked
    if _checked:
        return
    missing = missing_names()
    if missing:
        raise AiortcIncompatible(_message(missing))
    _checked = True


def install() -> None:
    """Start-up step of a media process: check aiortc, then make its rate counters lazy."""
    check()
    install_lazy_rate_counter()


def install_or_exit() -> None:
    """``install`` for a command line: on an unknown aiortc, exit non-zero with the message
    (no traceback)."""
    try:
        install()
    except AiortcIncompatible as exc:
        raise SystemExit(f"shopcast: cannot start: {exc}") from None


# --- codec negotiation (aiortc's codec registry, the codecs a transceiver settles on) ---


def add_video_codecs(codecs: list[tuple[str, dict[str, str]]]) -> None:
    """Let aiortc negotiate these (mime type, fmtp parameters) video codecs too, each with
    RTX, on the next free dynamic payload types; those it already has are left alone.

    aiortc matches an offer against its module registry ``aiortc.codecs.CODECS`` (H.264 only
    as 42001f/42e01f) and compares H.264 by profile and packetization mode, so one entry per
    profile makes every spelling of it negotiable. Nothing decodes them on the SFU."""
    from aiortc import codecs as aiortc_codecs  # the registry, not the codec classes

    video = aiortc_codecs.CODECS["video"]
    feedback = next((c.rtcpFeedback for c in video if c.mimeType.lower() != "video/rtx"), [])
    next_pt = max((c.payloadType or 0 for c in video), default=96) + 1
    for mime_type, parameters in codecs:
        if any(c.mimeType.lower() == mime_type.lower() and c.parameters == parameters
               for c in video):
            continue
        if next_pt + 1 > 127:
            raise AiortcIncompatible("no dynamic RTP payload type left for another codec")
        video.append(RTCRtpCodecParameters(
            mimeType=mime_type, clockRate=90000, payloadType=next_pt,
            rtcpFeedback=list(feedback), parameters=dict(parameters),
        ))
        video.append(RTCRtpCodecParameters(
            mimeType="video/rtx", clockRate=90000, payloadType=next_pt + 1,
            parameters={"apt": next_pt},
        ))
        next_pt += 2


class _RewritingTransceiver(RTCRtpTransceiver):
    """A transceiver whose negotiated codecs pass through a rewrite as aiortc stores them
    (``setRemoteDescription``), so the answer written next carries the rewritten fmtp."""

    _shopcast_rewrite: Callable[[RTCRtpCodecParameters], None]

    @property
    def _codecs(self) -> list[RTCRtpCodecParameters]:
        codecs: list[RTCRtpCodecParameters] = self.__dict__["_codecs"]
        return codecs

    @_codecs.setter
    def _codecs(self, codecs: list[RTCRtpCodecParameters]) -> None:
        for codec in codecs:
            self._shopcast_rewrite(codec)
        self.__dict__["_codecs"] = codecs


def rewrite_negotiated_codecs(
    transceiver: RTCRtpTransceiver, rewrite: Callable[[RTCRtpCodecParameters], None]
) -> None:
    """Before the offer is applied: call ``rewrite`` on each codec this transceiver settles on
    (aiortc copies its registry entry's fmtp; we answer with the one the peer must use).
    Only this transceiver changes class; aiortc's own class is left as it is."""
    if "_codecs" not in vars(transceiver):
        raise AiortcIncompatible(_message([_readable("_codecs", "RTCRtpTransceiver")]))
    transceiver._shopcast_rewrite = rewrite  # type: ignore[attr-defined]
    transceiver.__class__ = _RewritingTransceiver
