"""A Consumer is one Producer's track going out to one viewer leg.

The per-packet path is ``forward``: keyframe gate, header rewrite only if this viewer needs one
(its own payload-type number; after a layer switch, its sequence-number and timestamp offsets),
SRTP protect, one UDP send. No packet objects, no tasks, no awaits.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aioice.ice import StunProtocol
from aiortc import RTCDtlsTransport, RTCRtpSender
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from sfu.aiortc_private import (
    ice_connection,
    intercept_sender_rtcp,
    nominated_pair,
    srtp_protect,
)
from sfu.background import spawn

if TYPE_CHECKING:
    from sfu.producer import Producer

logger = logging.getLogger("shopcast.sfu.consumer")

SendFn = Callable[[bytes], object]
_TIMESTAMP = struct.Struct("!I")
_SEQ_TS = struct.Struct("!HI")
SWITCH_FRAME_S = 1 / 30  # the timestamp step from the old layer's last frame to the new keyframe
# after a layer switch, the sequence numbers before it were another layer's: never resent
_UNRESENDABLE = 2048
RESEND_INTERVAL_S = 0.1  # a packet is resent at most this often, however often it is NACKed
_RESENT_KEPT = 1024

# one connected duplicate of each viewer's ICE socket, closed with the peer connection
_connected: dict[int, socket.socket] = {}


def release_socket(dtls: RTCDtlsTransport) -> None:
    sock = _connected.pop(id(dtls), None)
    if sock is not None:
        sock.close()
ProtectFn = Callable[[bytes], bytes]


class Consumer:
    """Forwards a producer's canonical packets to one viewer over its SRTP session."""

    __slots__ = (
        "_aiortc_rtcp",
        "_last",
        "_protect",
        "_pt",
        "_resent",
        "_restamped",
        "_rewrite",
        "_send",
        "_seq_delta",
        "_switch",
        "_ts_delta",
        "loss",
        "nacks",
        "octets",
        "packets",
        "plis",
        "producer",
        "remb_bps",
        "retransmits",
        "sender",
        "started",
        "viewer_id",
    )

    def __init__(
        self,
        producer: Producer,
        payload_type: int,
        viewer_id: str,
        protect: ProtectFn,
        send: SendFn,
    ) -> None:
        self.producer = producer
        self.viewer_id = viewer_id
        self._pt = payload_type if payload_type != producer.payload_type else -1
        self._seq_delta = 0  # added to the producer's sequence numbers and timestamps after a
        self._ts_delta = 0  # switch of layer, so that the viewer sees one continuous track
        self._rewrite = self._pt >= 0
        self._last = b""  # the last packet sent: where a switch continues from
        self._switch: LayerSwitch | None = None
        self._resent: dict[int, float] = {}  # sequence number -> when it was last resent
        self.loss: float | None = None  # the viewer's latest fraction lost for this track
        self.remb_bps: int | None = None  # its latest REMB
        self._protect = protect
        self._send = send
        self.started = producer.kind != "video"
        self._restamped = (0, 0)  # (first sequence number, count) re-stamped by a fast start
        self.packets = 0
        self.octets = 0
        self.nacks = 0
        self.retransmits = 0
        self.plis = 0
        self.sender: RTCRtpSender | None = None
        self._aiortc_rtcp: Callable[[AnyRtcpPacket], Awaitable[None]] | None = None

    @classmethod
    def for_sender(
        cls, producer: Producer, sender: RTCRtpSender, payload_type: int, viewer_id: str
    ) -> Consumer:
        """A consumer sending through an aiortc sender whose DTLS transport is connected."""
        dtls: RTCDtlsTransport = sender.transport
        consumer = cls(producer, payload_type, viewer_id, srtp_protect(dtls), udp_sender(dtls))
        consumer.sender = sender
        consumer._aiortc_rtcp = intercept_sender_rtcp(sender, consumer.handle_rtcp)
        return consumer

    def forward(self, packet: bytes, keyframe: bool) -> None:
        """Send one canonical packet; video waits for a keyframe start."""
        if not self.started:
            if not keyframe:
                return
            self.started = True
        if self._rewrite:
            packet = self._rewritten(packet, self._seq_delta, self._ts_delta)
        try:  # inline, not a helper: this runs per packet per viewer
            self._send(self._protect(packet))
        except Exception as exc:  # a closing transport must never break the fan-out loop
            logger.debug("send failed viewer=%s: %s", self.viewer_id, exc)
            return
        self._last = packet
        self.packets += 1
        self.octets += len(packet) - 12

    def _rewritten(self, packet: bytes, seq_delta: int, ts_delta: int) -> bytes:
        """This viewer's header: its payload-type number, its layer offsets."""
        header = bytearray(packet)
        if self._pt >= 0:
            header[1] = (header[1] & 0x80) | self._pt
        seq, ts = _SEQ_TS.unpack_from(header, 2)
        _SEQ_TS.pack_into(header, 2, (seq + seq_delta) & 0xFFFF, (ts + ts_delta) & 0xFFFFFFFF)
        return bytes(header)

    def fast_start(self, packets: list[bytes], ticks_per_ms: int) -> None:
        """Start a joining viewer at once from a cached keyframe and the packets after it.

        Their frames are re-stamped 1 ms apart, ending at the newest frame's timestamp (its
        remaining packets come live with that timestamp): a player shows them as one quick
        catch-up instead of anchoring its playout on the keyframe's age, and the live frames
        that follow keep their own timestamps. Runs once per join, not per packet.
        """
        if self.started or not packets:
            return
        self.started = True
        newest = _TIMESTAMP.unpack_from(packets[-1], 4)[0]
        frames: list[int] = []
        for packet in packets:
            stamp = _TIMESTAMP.unpack_from(packet, 4)[0]
            if not frames or frames[-1] != stamp:
                frames.append(stamp)
        last = len(frames) - 1
        first_seq = (packets[0][2] << 8) | packets[0][3]
        self._restamped = (first_seq, sum(1 for p in packets if p[4:8] != packets[-1][4:8]))
        restamp = {stamp: (newest - (last - i) * ticks_per_ms) & 0xFFFFFFFF
                   for i, stamp in enumerate(frames)}
        for packet in packets:
            header = bytearray(packet)
            _TIMESTAMP.pack_into(header, 4, restamp[_TIMESTAMP.unpack_from(packet, 4)[0]])
            self.forward(bytes(header), True)

    async def handle_rtcp(self, packet: AnyRtcpPacket) -> None:
        """Viewer feedback: NACK from the shared history, PLI/FIR upstream through the throttle;
        loss and REMB kept for the layer choice (``sfu/layers.py``)."""
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nacks += 1
            for seq in packet.lost:
                self.retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.plis += 1
            self.producer.request_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                self.remb_bps = unpack_remb_fci(packet.fci)[0]
            except ValueError:
                pass  # an APP feedback that is not REMB
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.producer.ssrc:
                    self.loss = report.fraction_lost / 256
            if self._aiortc_rtcp is not None:
                await self._aiortc_rtcp(packet)  # aiortc keeps RTT and remote-inbound stats

    def retransmit(self, sequence_number: int) -> None:
        """Resend one packet, at most once per ``RESEND_INTERVAL_S`` (a receiver may list a
        missing packet in every NACK until it arrives: answering each would multiply the load
        on the link that lost it). Numbers a fast start re-stamped, and those sent before a
        layer switch (the viewer's link was failing: resending the old layer would load it
        more), are not resent."""
        if not self.started:
            return
        now = time.monotonic()
        if now - self._resent.get(sequence_number, -1.0) < RESEND_INTERVAL_S:
            return
        first, count = self._restamped
        if (sequence_number - first) & 0xFFFF < count:
            return  # this viewer had it with another timestamp or layer
        data = self.producer.history.get((sequence_number - self._seq_delta) & 0xFFFF)
        if data is None:
            return
        if len(self._resent) >= _RESENT_KEPT:
            self._resent.clear()
        self._resent[sequence_number] = now
        self.retransmits += 1
        self.producer.retransmits += 1
        self.forward(data, True)

    def sender_report(self) -> tuple[int, int]:
        """The producer's (NTP, RTP) pair on this viewer's timestamps."""
        ntp, rtp = self.producer.sender_report()
        return ntp, (rtp + self._ts_delta) & 0xFFFFFFFF

    def switch_to(self, target: Producer) -> None:
        """Send ``target`` (another layer of the same slot) from its next keyframe on, which is
        asked for; until then the current layer goes on. No renegotiation: sequence numbers
        and timestamps continue where this viewer's last packet left them. Once per switch."""
        if self._switch is not None:
            if self._switch.target is target:
                return
            self._switch.close()
        if target is self.producer or target.closed:
            return
        self._switch = LayerSwitch(self, target)
        target.sinks.append(self._switch)
        target.request_keyframe()

    def _take(self, switch: LayerSwitch, packet: bytes) -> None:
        """The target layer's keyframe arrived (inside its fan-out loop): this consumer takes the
        switch's place among its sinks, leaves the old layer, and continues its numbering."""
        target = switch.target
        self._switch = None
        target.sinks[target.sinks.index(switch)] = self
        self.producer.detach(self)
        self.producer = target
        if self._last:
            seq, ts = _SEQ_TS.unpack_from(self._last, 2)
            step = int(SWITCH_FRAME_S * target.codec.clockRate)
            in_seq, in_ts = _SEQ_TS.unpack_from(packet, 2)
            self._seq_delta = (seq + 1 - in_seq) & 0xFFFF
            self._ts_delta = (ts + step - in_ts) & 0xFFFFFFFF
            self._restamped = ((seq + 1 - _UNRESENDABLE) & 0xFFFF, _UNRESENDABLE)
        self._rewrite = True
        self.started = True
        self.forward(packet, True)

    def close(self) -> None:
        if self._switch is not None:
            self._switch.close()
            self._switch = None
        self.producer.detach(self)
        self._send = _closed_send


class LayerSwitch:
    """Stands among the target layer's sinks until its next keyframe start, then hands over to
    the consumer (``Consumer._take``). Drops everything before it."""

    __slots__ = ("consumer", "target")

    def __init__(self, consumer: Consumer, target: Producer) -> None:
        self.consumer = consumer
        self.target = target

    def forward(self, packet: bytes, keyframe: bool) -> None:
        # the first packet of a keyframe picture, not a later slice of one
        if keyframe and (packet[2] << 8) | packet[3] == self.target.keyframe_seq:
            self.consumer._take(self, packet)

    def close(self) -> None:
        self.target.detach(self)


def _closed_send(data: bytes) -> None:
    raise ConnectionError("consumer closed")


def udp_sender(dtls: RTCDtlsTransport) -> SendFn:
    """A synchronous send on the nominated ICE pair; TURN pairs fall back to aiortc's path.

    For a host pair the ICE socket is connected to the peer once nominated (aiortc has no ICE
    restart, so the peer is fixed): ``send`` on a connected UDP socket skips the address
    conversion and route lookup that ``sendto`` pays per packet. aioice keeps working on it.
    """
    pair = nominated_pair(dtls)
    if pair is None:
        raise ConnectionError("ICE has no nominated pair")
    protocol = pair.protocol
    if type(protocol) is StunProtocol and protocol.transport is not None:
        raw = protocol.transport.get_extra_info("socket")
        if raw is not None:
            sock = _connected.get(id(dtls))
            if sock is None:  # audio and video share the bundled transport
                sock = socket.socket(fileno=os.dup(raw.fileno()))
                sock.setblocking(False)
                sock.connect(pair.remote_addr)
                _connected[id(dtls)] = sock
            return sock.send
        sendto = protocol.transport.sendto
        addr = pair.remote_addr

        def send(data: bytes) -> None:
            sendto(data, addr)

        return send

    connection = ice_connection(dtls)

    def send_async(data: bytes) -> None:
        spawn(connection.send(data))

    return send_async
