"""A network namespace joined to the test's namespace by a veth pair, to run a client on a
link the test can degrade (``tc``), and that is gone after the test whatever happened.

Each end gets one address of a private /30 and nothing else (no route out, no NAT): the
client reaches the server's address on the veth and nothing beyond it. The kernels the tests
run on have no ``sch_netem``, so a link is degraded with a token-bucket rate cap (``tbf``):
a sender above the rate queues and then loses packets, which is loss produced by congestion,
not random loss.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

_counter = itertools.count()


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", "netns", "exec", netns, *args] if netns else list(args)
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Namespace:
    name: str
    host_dev: str  # the veth end in the test's namespace
    dev: str  # the veth end inside the namespace
    host_ip: str  # the server listens here
    ip: str  # the client's address

    def prefix(self) -> list[str]:
        """Run a command inside: ``[*ns.prefix(), "chromium", ...]``."""
        return ["ip", "netns", "exec", self.name]

    def rate_cap(self, rate: str = "200kbit", burst: str = "4kb", latency: str = "100ms"
                 ) -> None:
        """Cap what leaves the namespace (the client's uplink) with a token bucket."""
        _ip("tc", "qdisc", "add", "dev", self.dev, "root", "tbf", "rate", rate, "burst", burst,
            "latency", latency, netns=self.name)

    def lift(self) -> None:
        _ip("tc", "qdisc", "del", "dev", self.dev, "root", netns=self.name)

    def pids(self) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True,
                              text=True, timeout=10, check=False)
        return [int(p) for p in done.stdout.split()]


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace and veth pair with unique names; on exit the processes still in it
    are killed and both are deleted, even when the test failed."""
    n = next(_counter)
    tag = f"{os.getpid() % 100000}{n}"
    subnet = (os.getpid() + n) % 250
    ns = Namespace(name=f"scns{tag}", host_dev=f"sch{tag}", dev=f"scc{tag}",
                   host_ip=f"10.213.{subnet}.1", ip=f"10.213.{subnet}.2")
    try:
        _ip("ip", "netns", "add", ns.name)
        _ip("ip", "link", "add", ns.host_dev, "type", "veth", "peer", "name", ns.dev)
        _ip("ip", "link", "set", ns.dev, "netns", ns.name)
        _ip("ip", "addr", "add", f"{ns.host_ip}/30", "dev", ns.host_dev)
        _ip("ip", "link", "set", ns.host_dev, "up")
        _ip("ip", "addr", "add", f"{ns.ip}/30", "dev", ns.dev, netns=ns.name)
        _ip("ip", "link", "set", ns.dev, "up", netns=ns.name)
        _ip("ip", "link", "set", "lo", "up", netns=ns.name)
        yield ns
    finally:
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(RuntimeError):
            _ip("ip", "link", "del", ns.host_dev)  # takes its peer with it
        with contextlib.suppress(RuntimeError):
            _ip("ip", "netns", "del", ns.name)
