"""``python -m benchmarks.path``: the SFU's per-packet path in-process, beside the floor.

White-box, unlike ``loadtest``'s scenarios (it imports ``sfu``): one Producer fans packets out to N
real Consumers, each with its own pylibsrtp session (AES-256-GCM, what browsers and aiortc
negotiate) and its own connected UDP socket, exactly as a viewer worker does after DTLS; the
floor is the same protect + send per viewer with nothing around it. Datagrams go to loopback
sockets that this process drains between bursts (the drain is counted in both, equally).

What it tells: whether ``Producer.relay`` -> ``Consumer.forward`` adds anything per packet per
viewer over the floor, and what a viewer that switched video layers (sfu/layers.py) costs: its
consumer rewrites every header with its sequence-number and timestamp offsets ("switched").
The end-to-end figure (``python -m loadtest webrtc``) also pays what is
not per packet: the hop to the worker processes, aiortc's per-viewer RTCP and ICE-consent
timers, event-loop wake-ups, and a machine shared with the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters
from pylibsrtp import Policy, Session

from loadtest.stats import write_report
from sfu.consumer import Consumer
from sfu.producer import Producer

DRAINS = 8
PAYLOAD_TYPE = 102


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.path",
                                description="the SFU's per-packet path in-process vs the floor")
    p.add_argument("--viewers", type=int, default=100)
    p.add_argument("--packets", type=int, default=2000)
    p.add_argument("--size", type=int, default=1200)
    p.add_argument("--report", default="loadtest/reports")
    return p.parse_args(argv)


def _session() -> Session:
    policy = Policy(key=os.urandom(44), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_256_GCM)
    return Session(policy=policy)


def _packet(seq: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, PAYLOAD_TYPE, seq & 0xFFFF, seq * 3000, 1234) + payload


class _Sockets:
    """N connected senders spread over DRAINS loopback receivers."""

    def __init__(self, viewers: int) -> None:
        self.drains = []
        for _ in range(DRAINS):
            drain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            drain.bind(("127.0.0.1", 0))
            drain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            drain.setblocking(False)
            self.drains.append(drain)
        self.senders = []
        for i in range(viewers):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sender.setblocking(False)
            sender.connect(self.drains[i % DRAINS].getsockname())
            self.senders.append(sender)

    def drain(self) -> None:
        for sock in self.drains:
            try:
                while True:
                    sock.recv(2048)
            except BlockingIOError:
                pass

    def close(self) -> None:
        for sock in [*self.drains, *self.senders]:
            sock.close()


def _measure(step: Callable[[int], None], first: int, packets: int, viewers: int,
             drain: Callable[[], None]) -> float:
    """CPU microseconds per packet per viewer for ``step(seq)`` over ``packets`` packets
    (sequence numbers go on across runs: SRTP refuses to protect one twice)."""
    start = time.process_time()
    for seq in range(first, first + packets):
        step(seq)
        if seq % 16 == 15:
            drain()
    drain()
    return (time.process_time() - start) / (packets * viewers) * 1e6


def _quiet_send(send: Callable[[bytes], object]) -> Callable[[bytes], None]:
    def send_or_drop(data: bytes) -> None:
        try:
            send(data)
        except BlockingIOError:
            pass

    return send_or_drop


async def run(viewers: int, packets: int, size: int) -> dict[str, Any]:
    sockets = _Sockets(viewers)
    payload = os.urandom(size - 12)
    codec = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000,
                                  payloadType=PAYLOAD_TYPE)
    producer = Producer("video", codec, publisher_id="bench", request_keyframe=lambda _: None)
    for i, sock in enumerate(sockets.senders):
        consumer = Consumer(producer, PAYLOAD_TYPE, f"v{i}", _session().protect,
                            _quiet_send(sock.send))
        consumer.started = True
        producer.sinks.append(consumer)
    floor_sessions = [(_session().protect, _quiet_send(s.send)) for s in sockets.senders]
    switched = _switched_viewers(codec, sockets, payload)

    def floor(seq: int) -> None:
        data = _packet(seq, payload)
        for protect, send in floor_sessions:
            send(protect(data))

    def path(seq: int) -> None:
        producer.relay(_packet(seq, payload), False)

    def layered(seq: int) -> None:
        switched.relay(_packet(seq, payload), False)

    try:
        results: dict[str, list[float]] = {"floor": [], "path": [], "switched": []}
        for run_no in range(3):  # interleaved, so drift on a shared machine hits all alike
            first = 8 + run_no * packets
            results["floor"].append(_measure(floor, first, packets, viewers, sockets.drain))
            results["path"].append(_measure(path, first, packets, viewers, sockets.drain))
            results["switched"].append(_measure(layered, first, packets, viewers, sockets.drain))
    finally:
        sockets.close()
    floor_us, path_us = min(results["floor"]), min(results["path"])
    switched_us = min(results["switched"])
    return {"scenario": "path", "viewers": viewers, "packets": packets, "size": size,
            "floor_us": round(floor_us, 3), "path_us": round(path_us, 3),
            "switched_us": round(switched_us, 3),
            "ratio": round(path_us / floor_us, 3),
            "switched_ratio": round(switched_us / path_us, 3), "runs": results}


def _switched_viewers(codec: RTCRtpCodecParameters, sockets: _Sockets, payload: bytes
                      ) -> Producer:
    """A second layer whose viewers all came over from another one (``Consumer.switch_to``,
    taken at its keyframe): from then on each of their packets gets the layer offsets."""
    high = Producer("video", codec, publisher_id="bench", request_keyframe=lambda _: None)
    low = Producer("video", codec, publisher_id="bench", request_keyframe=lambda _: None,
                   layer="low")
    for i, sock in enumerate(sockets.senders):
        consumer = Consumer(high, PAYLOAD_TYPE, f"s{i}", _session().protect,
                            _quiet_send(sock.send))
        consumer.started = True
        high.sinks.append(consumer)
    high.relay(_packet(40_000, payload), False)
    for consumer in list(high.sinks):
        assert isinstance(consumer, Consumer)
        consumer.switch_to(low)
    low.relay(_packet(0, payload), True)  # the keyframe they switch at
    assert len(low.sinks) == len(sockets.senders) and not high.sinks
    return low


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args.viewers, args.packets, args.size))
    print(f"per packet per viewer, {args.viewers} viewers, {args.size} B, best of 3: "
          f"floor {report['floor_us']:.2f} us, Producer.relay -> Consumer.forward "
          f"{report['path_us']:.2f} us = {report['ratio']:.2f}x the floor; viewers that switched "
          f"layers {report['switched_us']:.2f} us = {report['switched_ratio']:.2f}x the path")
    print(f"report: {write_report(report, args.report, 'path')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
