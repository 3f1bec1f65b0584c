"""The floor: what forwarding one packet to one viewer cannot avoid in Python on this machine.

Per packet per viewer an SFU must at least SRTP-protect it with that viewer's key and hand it to
the kernel with one ``sendto`` on that viewer's socket. This measures exactly that, with real
pylibsrtp sessions (one key per viewer, the profiles aiortc negotiates) and real UDP sockets whose
datagrams a separate process drains, so the kernel's loopback delivery is paid as it is for the
server. The result is CPU (user+system) microseconds per packet per viewer; the webrtc scenario
divides the server's marginal cost per forwarded packet by it.

``python -m loadtest floor [--viewers 50] [--sizes 120,1200] [--seconds 1.5]``
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import selectors
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any

from pylibsrtp import Policy, Session

PROFILES = {
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
    "AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
}
DRAIN_SOCKETS = 8
DRAIN_LIMIT_S = 300.0
MAX_PACKETS = 2_000_000  # per measurement, whatever --seconds says
CALIBRATE_PACKETS = 200


def drain(ports: Connection, seconds: float, sockets: int = DRAIN_SOCKETS) -> None:
    """A receiving process: ``sockets`` loopback sockets, woken by epoll and drained (a bounded
    burst each) until told to stop or the hard deadline; sends their ports first, then the
    count of datagrams received."""
    socks = []
    sel = selectors.DefaultSelector()
    for _ in range(sockets):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    ports.send([s.getsockname()[1] for s in socks])
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not ports.poll():
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            for _ in range(256):  # bounded burst per wake-up
                try:
                    sock.recv(2048)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                count += 1
    ports.send(count)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def srtp_sessions(viewers: int, profile: str) -> list[Session]:
    libsrtp_profile, key_len = PROFILES[profile]
    out = []
    for _ in range(viewers):
        policy = Policy(key=os.urandom(key_len), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=libsrtp_profile)
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        out.append(Session(policy))
    return out


def measure(viewers: int, size: int, profile: str, seconds: float) -> dict[str, Any]:
    """CPU us per packet per viewer for protect alone and protect + sendto."""
    receiver, child_end = mp.Pipe()
    drainer = mp.get_context("spawn").Process(target=drain, args=(child_end, DRAIN_LIMIT_S))
    drainer.start()
    try:
        ports = receiver.recv() if receiver.poll(10) else []
        if not ports:
            raise RuntimeError("drain process did not start")
        sessions = srtp_sessions(viewers, profile)
        socks = []
        for n in range(viewers):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.connect(("127.0.0.1", ports[n % len(ports)]))  # a viewer's nominated pair
            s.setblocking(False)
            socks.append(s)
        payload = bytes(range(256)) * (size // 256 + 1)
        pairs = list(zip(sessions, socks, strict=True))

        def packet(seq: int) -> bytes:
            return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3000, 0x1234) + payload[
                : max(0, size - 12)]

        # Rounds sized so each measurement lasts about `seconds` (wall clock: os.times() ticks
        # are 10 ms, too coarse for a short calibration).
        t0 = time.perf_counter()
        for seq in range(CALIBRATE_PACKETS):
            pkt = packet(seq)
            for sess, sock in pairs:
                sock.send(sess.protect(pkt))
        per_round = max(1e-7, (time.perf_counter() - t0) / CALIBRATE_PACKETS)
        rounds = max(10, min(MAX_PACKETS // max(1, viewers), int(seconds / per_round)))
        seq = CALIBRATE_PACKETS

        t0 = cpu_seconds()
        for _ in range(rounds):
            pkt = packet(seq)
            seq += 1
            for sess, _sock in pairs:
                sess.protect(pkt)
        protect_s = cpu_seconds() - t0

        blocked = 0
        t0, w0 = cpu_seconds(), time.monotonic()
        for _ in range(rounds):
            pkt = packet(seq)
            seq += 1
            for sess, sock in pairs:
                try:
                    sock.send(sess.protect(pkt))
                except BlockingIOError:
                    blocked += 1
        both_s, wall = cpu_seconds() - t0, time.monotonic() - w0
        for s in socks:
            s.close()
        sent = rounds * viewers
        receiver.send("stop")
        drained = receiver.recv() if receiver.poll(10) else None
        return {
            "viewers": viewers, "size": size, "profile": profile, "packets": sent,
            "protect_us": round(1e6 * protect_s / sent, 3),
            "protect_sendto_us": round(1e6 * both_s / sent, 3),
            "sendto_us": round(1e6 * (both_s - protect_s) / sent, 3),
            "wall_us": round(1e6 * wall / sent, 3),
            "blocked": blocked, "drained": drained,
        }
    finally:
        drainer.join(15)
        if drainer.is_alive():
            drainer.terminate()


def run_floor(viewers: int = 50, sizes: tuple[int, ...] = (120, 1200),
              profiles: tuple[str, ...] = tuple(PROFILES), seconds: float = 1.5) -> dict[str, Any]:
    """Every (profile, size) measurement; keys of `us` are "<profile>/<size>"."""
    rows = [measure(viewers, size, prof, seconds) for prof in profiles for size in sizes]
    return {"rows": rows, "us": {f"{r['profile']}/{r['size']}": r["protect_sendto_us"]
                                 for r in rows}}


def floor_for_mix(floor: dict[str, Any], profile: str, mix: dict[int, float]) -> float | None:
    """The floor for a packet mix {size: share}, interpolating linearly between measured sizes."""
    rows: list[tuple[int, float]] = sorted(
        (int(r["size"]), float(r["protect_sendto_us"]))
        for r in floor["rows"] if r["profile"] == profile)
    if not rows or not mix:
        return None
    total = sum(mix.values()) or 1.0

    def at(size: float) -> float:
        if len(rows) == 1 or size <= rows[0][0]:
            return rows[0][1]
        for (s0, u0), (s1, u1) in itertools.pairwise(rows):
            if size <= s1:
                return u0 + (u1 - u0) * (size - s0) / (s1 - s0)
        return rows[-1][1]

    return round(sum(at(s) * w for s, w in mix.items()) / total, 3)


def print_floor(floor: dict[str, Any]) -> None:
    print(f"{'profile':<18} {'size':>5} {'protect us':>10} {'sendto us':>9} {'floor us':>8}")
    for r in floor["rows"]:
        print(f"{r['profile']:<18} {r['size']:>5} {r['protect_us']:>10.2f} {r['sendto_us']:>9.2f}"
              f" {r['protect_sendto_us']:>8.2f}")
