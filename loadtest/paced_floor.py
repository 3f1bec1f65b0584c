"""The floor at the viewers' real packet rate, to receivers that sleep between packets.

``loadtest.floor`` sends as fast as it can to a few sockets that one busy process drains: the
kernel never has to wake a receiver, so a send is as cheap as it gets. A server forwards a
packet every ~7.6 ms (130 packets/s per viewer) to one socket per viewer, and on loopback
the sender's ``send`` also pays the delivery into that socket and the wake-up of the process
sleeping on it. This variant does the same: N sender sockets with their own SRTP keys, one
receiver socket each, spread over K receiver processes that sleep in ``epoll`` between
packets (as the load generator does); every 1/rate seconds one packet is protected and sent
to each of the N, then the sender sleeps. Its CPU (user+system) per packet per viewer is what
a forwarded packet cannot avoid on this machine in the conditions of the webrtc scenario.

``python -m loadtest paced-floor [--viewers 200] [--receivers 2] [--rate 130] [--seconds 4]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import struct
import time
from typing import Any

from loadtest.floor import DRAIN_LIMIT_S, cpu_seconds, drain, srtp_sessions

MAX_SECONDS = 30.0


def measure_paced(viewers: int, size: int, profile: str, *, receivers: int = 2,
                  rate: float = 130.0, seconds: float = 4.0) -> dict[str, Any]:
    """CPU us per packet per viewer for protect + send at ``rate`` rounds per second."""
    seconds = min(seconds, MAX_SECONDS)
    ctx = mp.get_context("spawn")
    pipes, procs, ports = [], [], []
    shares = [viewers // receivers + (i < viewers % receivers) for i in range(receivers)]
    try:
        for share in shares:
            mine, theirs = mp.Pipe()
            proc = ctx.Process(target=drain, args=(theirs, DRAIN_LIMIT_S, share))
            proc.start()
            pipes.append(mine)
            procs.append(proc)
        for pipe in pipes:
            if not pipe.poll(10):
                raise RuntimeError("a receiver process did not start")
            ports += pipe.recv()
        sessions = srtp_sessions(viewers, profile)
        socks = []
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            socks.append(s)
        pairs = list(zip(sessions, socks, strict=True))
        payload = bytes(range(256)) * (size // 256 + 1)
        rounds = max(10, int(seconds * rate))
        period = 1.0 / rate
        blocked = 0
        t0, w0 = cpu_seconds(), time.monotonic()
        for n in range(rounds):
            packet = struct.pack("!BBHII", 0x80, 96, n & 0xFFFF, n * 3000, 0x1234) + payload[
                : max(0, size - 12)]
            for sess, sock in pairs:
                try:
                    sock.send(sess.protect(packet))
                except BlockingIOError:
                    blocked += 1
            pause = w0 + (n + 1) * period - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        cpu_s, wall = cpu_seconds() - t0, time.monotonic() - w0
        for s in socks:
            s.close()
        received = 0
        for pipe in pipes:
            pipe.send("stop")
            received += pipe.recv() if pipe.poll(10) else 0
        sent = rounds * viewers
        return {"viewers": viewers, "size": size, "profile": profile, "receivers": receivers,
                "rate": rate, "packets": sent, "received": received, "blocked": blocked,
                "protect_sendto_us": round(1e6 * cpu_s / sent, 3),
                "sender_cpu_pct": round(100 * cpu_s / wall, 1)}
    finally:
        for proc in procs:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()


def run_paced_floor(viewers: int = 200, sizes: tuple[int, ...] = (120, 1200),
                    profiles: tuple[str, ...] = ("AEAD_AES_256_GCM",), receivers: int = 2,
                    rate: float = 130.0, seconds: float = 4.0) -> dict[str, Any]:
    """Rows shaped like loadtest.floor's, so ``floor_for_mix`` reads them too."""
    rows = [measure_paced(viewers, size, prof, receivers=receivers, rate=rate, seconds=seconds)
            for prof in profiles for size in sizes]
    return {"rows": rows}


def print_paced_floor(floor: dict[str, Any]) -> None:
    print(f"{'profile':<18} {'N':>4} {'size':>5} {'pkts/s':>6} {'floor us':>8} {'received':>9}")
    for r in floor["rows"]:
        print(f"{r['profile']:<18} {r['viewers']:>4} {r['size']:>5} {r['rate']:>6.0f}"
              f" {r['protect_sendto_us']:>8.2f} {r['received']:>4}/{r['packets']}")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "paced-floor", help="the floor at the viewers' packet rate, to sleeping receivers")
    p.add_argument("--viewers", type=int, default=200)
    p.add_argument("--receivers", type=int, default=2)
    p.add_argument("--rate", type=float, default=130.0)
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[120, 1200])
    p.add_argument("--seconds", type=float, default=4.0)


def main(args: argparse.Namespace) -> int:
    print_paced_floor(run_paced_floor(args.viewers, tuple(args.sizes), receivers=args.receivers,
                                      rate=args.rate, seconds=args.seconds))
    return 0
