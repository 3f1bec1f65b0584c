"""The cheap viewer: count RTP from raw SRTP datagrams, no unprotect, no parse, no task hop.

SRTP encrypts the payload but leaves the RTP header in clear, so once a viewer has seen its
first keyframe (which needs one decrypt: the NAL type is in the payload) sequence numbers,
payload types and marker bits are all a load generator needs to measure rate and loss. The hook
sits in the UDP protocol of the viewer's ICE connection: RTP is counted and dropped right there;
STUN (consent freshness, which keeps the server's session alive), DTLS and SRTCP (the server's
sender reports, so our receiver reports stay true) still take aiortc's normal path.

Counting viewers send no NACK once switched, so their loss is raw loss on the wire: an upper
bound of what a real viewer would fail to recover.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

from loadtest.clients import Viewer
from loadtest.counters import StreamCounter

SWITCH_AFTER_S = 10.0  # without a keyframe by then, count raw anyway (and say so)
RCVBUF_BYTES = 1 << 20  # capped by net.core.rmem_max; lowers drops when this process lags
TAG_BYTES = {"AEAD_AES_256_GCM": 16, "AEAD_AES_128_GCM": 16, "AES128_CM_SHA1_80": 10}


def srtp_profile(viewer: Viewer) -> str | None:
    """The SRTP profile the viewer's DTLS handshake chose (aiortc prefers AES-256-GCM)."""
    with contextlib.suppress(AttributeError, IndexError, TypeError):
        ssl: Any = viewer.pc.getTransceivers()[0].receiver.transport._ssl
        name = ssl.get_selected_srtp_profile()
        return name.decode().removeprefix("SRTP_") if name else None
    return None


def _payload_size(data: bytes, tag: int) -> int:
    """RTP payload bytes of an SRTP datagram (header, CSRCs, extension and tag left out)."""
    size = len(data) - 12 - 4 * (data[0] & 0x0F) - tag
    if data[0] & 0x10:
        at = 12 + 4 * (data[0] & 0x0F)
        if len(data) >= at + 4:
            size -= 4 + 4 * (data[at + 2] << 8 | data[at + 3])
    return max(0, size)


class RawCounter:
    """Per-viewer datagram hook; shares the viewer's StreamCounters so reports stay one shape."""

    def __init__(self, viewer: Viewer) -> None:
        if viewer.video is None or viewer.audio is None:
            raise ValueError("viewer has no counters (was it made by loadtest.clients.play?)")
        self.viewer = viewer
        self.streams: dict[int, StreamCounter] = {}
        self.rtx_payload_types: set[int] = set()
        self.rtx = 0  # retransmissions seen on the raw path (we send no NACK, so expect 0)
        self.unknown = 0  # RTP with a payload type we did not negotiate
        self.raw = False  # switched from aiortc's path to header counting
        self.switched_by_timeout = False
        self._original: list[Callable[[bytes, Any], None]] = []
        for tr in viewer.pc.getTransceivers():
            counter = viewer.video.stream if tr.kind == "video" else viewer.audio.stream
            for codec in tr._codecs:  # negotiated codecs (private in aiortc 1.16)
                if codec.payloadType is None:
                    continue
                if codec.mimeType.lower().endswith("/rtx"):
                    self.rtx_payload_types.add(codec.payloadType)
                else:
                    self.streams[codec.payloadType] = counter

    def install(self) -> None:
        """Hook every UDP protocol of the viewer's (bundled) ICE connection; call before media."""
        transceivers = self.viewer.pc.getTransceivers()
        if not transceivers or transceivers[0].receiver.transport is None:
            raise RuntimeError("viewer has no DTLS transport yet")
        connection = transceivers[0].receiver.transport.transport._connection  # aioice
        for proto in list(connection._protocols)[:16]:
            original: Callable[[bytes, Any], None] = proto.datagram_received
            self._original.append(original)
            proto.datagram_received = self._make_hook(original)  # type: ignore[method-assign,assignment]
            sock = proto.transport.get_extra_info("socket") if proto.transport else None
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
                except OSError:
                    pass

    def _make_hook(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        streams, rtx_pts, video = self.streams, self.rtx_payload_types, self.viewer.video
        deadline = self.viewer.started_at + SWITCH_AFTER_S
        monotonic = time.monotonic
        tag = 16

        def datagram_received(data: bytes, addr: Any) -> None:
            nonlocal tag
            if len(data) < 12 or not 127 < data[0] < 192 or 191 < data[1] < 224:
                original(data, addr)  # STUN, DTLS, SRTCP: aiortc's own path
                return
            if not self.raw:
                if video is not None and video.stream.first_keyframe_at is None:
                    if monotonic() < deadline:
                        original(data, addr)  # decrypt until the first keyframe (TTFF)
                        return
                    self.switched_by_timeout = True
                self.raw = True
                tag = TAG_BYTES.get(srtp_profile(self.viewer) or "", 16)
            pt = data[1] & 0x7F
            counter = streams.get(pt)
            if counter is not None:
                seq, size = data[2] << 8 | data[3], _payload_size(data, tag)
                counter.add_seq(seq, size, data[1] & 0x80, monotonic())
            elif pt in rtx_pts:
                self.rtx += 1
            else:
                self.unknown += 1

        return datagram_received

    def stats(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "rtx": self.rtx,
            "unknown_pt": self.unknown,
            "switched_by_timeout": self.switched_by_timeout,
        }
