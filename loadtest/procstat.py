"""CPU and UDP accounting from /proc, so every figure comes from the outside of the server.

The server under test may be one process or a tree (a listener plus viewer worker processes):
its CPU is always the sum over the whole tree, re-walked at the end of each window so workers
that appear mid-run are counted. The load generator shares the machine, so its own processes and
the machine's total are measured with the same clock.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_PROCS_SCANNED = 100_000
MAX_THREADS = 1000


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onward), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_tree(roots: list[int]) -> list[int]:
    """The roots and all their descendants (server worker processes count as the server)."""
    children: dict[int, list[int]] = {}
    for n, entry in enumerate(Path("/proc").iterdir()):
        if n > MAX_PROCS_SCANNED:
            break
        if entry.name.isdigit() and (f := _stat_fields(int(entry.name))):
            children.setdefault(int(f[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = list(roots)
    while todo and len(out) < MAX_PROCS_SCANNED:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime+stime per live pid, in clock ticks."""
    out = {}
    for pid in pids:
        if (f := _stat_fields(pid)) is not None:
            out[pid] = int(f[11]) + int(f[12])
    return out


def run_queue_wait_ns(pids: list[int]) -> dict[tuple[int, int], int]:
    """Nanoseconds each thread, keyed (pid, tid), spent runnable but waiting for a core
    (/proc/PID/task/TID/schedstat, second field): a server that waits a lot is starved by the
    machine, and its latency and loss then say more about the machine than about the server."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in list(Path(f"/proc/{pid}/task").iterdir())[:MAX_THREADS]:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    out[(pid, int(task.name))] = int((task / "schedstat").read_text().split()[1])
    return out


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all cores from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def udp_counters() -> dict[str, int]:
    """Machine-wide UDP counters (/proc/net/snmp): receive-buffer drops tell loss caused by a
    starved receiver (often the load generator itself) apart from loss at the server."""
    text = Path("/proc/net/snmp").read_text()
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


class CpuWindow:
    """CPU% (100 = one core) of the server tree, named process groups and the machine."""

    def __init__(self, server_roots: list[int], groups: dict[str, list[int]] | None = None) -> None:
        self.roots = server_roots
        self.groups = groups or {"loadgen": [os.getpid()]}
        self.t0 = time.monotonic()
        tree = process_tree(server_roots) if server_roots else []
        self.server0 = cpu_ticks(tree)
        self.wait0 = run_queue_wait_ns(tree)
        self.groups0 = {name: sum(cpu_ticks(p).values()) for name, p in self.groups.items()}
        self.machine0 = machine_ticks()
        self.udp0 = udp_counters()

    def result(self) -> dict[str, float | int | None]:
        wall = max(1e-6, time.monotonic() - self.t0)
        tree = process_tree(self.roots) if self.roots else []
        server1 = cpu_ticks(tree)
        server = sum(t - self.server0.get(p, 0) for p, t in server1.items())
        wait = sum(t - self.wait0.get(p, 0) for p, t in run_queue_wait_ns(tree).items())
        busy1, total1 = machine_ticks()
        busy = (busy1 - self.machine0[0]) / max(1, total1 - self.machine0[1])
        udp1 = udp_counters()
        out: dict[str, float | int | None] = {
            "window_s": round(wall, 3),
            "server_cpu_pct": round(100 * server / CLK_TCK / wall, 2) if self.roots else None,
            "server_cpu_s": round(server / CLK_TCK, 3) if self.roots else None,
            "server_processes": len(server1),
            "server_wait_pct": round(100 * wait / 1e9 / wall, 2) if self.roots else None,
        }
        for name, pids in self.groups.items():
            ticks = sum(cpu_ticks(pids).values()) - self.groups0[name]
            out[f"{name}_cpu_pct"] = round(100 * ticks / CLK_TCK / wall, 2)
        out["machine_busy_pct"] = round(100 * busy, 2)
        out["cores"] = os.cpu_count() or 1
        for key in ("RcvbufErrors", "SndbufErrors", "InErrors"):
            out[f"udp_{key}"] = udp1.get(key, 0) - self.udp0.get(key, 0)
        return out


def listening_pids(port: int) -> list[int]:
    """Pids with a TCP socket listening on `port` (via /proc/net/tcp* inodes and /proc/*/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    pids = []
    for n, entry in enumerate(Path("/proc").iterdir()):
        if n > MAX_PROCS_SCANNED or not inodes:
            break
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
    # Keep the top of each tree: a worker whose parent also listens is counted via the parent.
    return sorted(p for p in pids if (f := _stat_fields(p)) is None or int(f[1]) not in pids)


def resolve_server_pids(url: str, given: list[int]) -> list[int]:
    """The --server-pid values, or whoever listens on the URL's port, or [] (said aloud)."""
    if given:
        return given
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pids = listening_pids(port)
    if pids:
        print(f"server pid(s) listening on port {port}: {pids} (CPU summed over their trees)")
    else:
        print(f"cannot find the process listening on port {port}; server CPU will not be measured")
    return pids
