"""The soak's own server: a redis-server and ``shopcast serve`` started on loopback, and what
their processes hold (RSS and open fds from /proc, no psutil).

The server runs as a child process of the soak, so the soak knows its pid tree exactly; Redis
runs with an append-only file in a temporary directory, as a durable production Redis would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.procstat import _stat_fields, process_tree

START_TIMEOUT_S = 90.0  # a traced server on a busy machine starts slowly
STOP_TIMEOUT_S = 10.0
MAX_FDS_LISTED = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def _ready(proc: subprocess.Popen[bytes], probe: Callable[[], bool]) -> bool:
    """Poll `probe` (OSError: not yet) until it says yes, the process exits, or the timeout."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            if probe():
                return True
        time.sleep(0.1)
    return False


def redis_command(port: int, *words: str) -> str:
    """One inline command over a raw socket (no client library): the first reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall((" ".join(words) + "\r\n").encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


class Redis:
    """A redis-server on a free loopback port with appendonly on, in a temporary directory."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.dir = tempfile.mkdtemp(prefix="shopcast-soak-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _ready(self.proc, lambda: redis_command(self.port, "PING") == "+PONG"):
            self.stop()
            raise RuntimeError(f"redis-server did not answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def keys(self) -> int | None:
        """DBSIZE: keys that outlive what they belonged to show here."""
        with contextlib.suppress(OSError, ValueError):
            return int(redis_command(self.port, "DBSIZE").lstrip(":"))
        return None

    def stop(self) -> None:
        _stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


CHECKOUT = Path(__file__).resolve().parent.parent
# The checkout's editable install would quietly fill any module the tree lacks from the
# working tree: the server must run the tree's code only, so that finder goes first.
LAUNCH = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
          "if 'editable' not in getattr(f, '__module__', '')]; "
          "from shopcast.cli import main; sys.exit(main())")


def export_tree(rev: str) -> tuple[Path, str]:
    """The server code of commit `rev` (``git archive``), or with `rev` ``snapshot`` a copy of
    the working tree as it is now (tracked and untracked files, uncommitted edits included),
    in a temporary directory; and what it is. A long run is then immune to edits meanwhile."""
    def git(*words: str) -> bytes:
        return subprocess.run(["git", *words], cwd=CHECKOUT, capture_output=True, check=True,
                              timeout=60).stdout

    head = git("rev-parse", "--verify", "HEAD" if rev == "snapshot" else f"{rev}^{{commit}}")
    commit = head.decode().strip()
    tree = Path(tempfile.mkdtemp(prefix=f"shopcast-soak-{commit[:8]}-"))
    if rev != "snapshot":
        subprocess.run(["tar", "-x", "-C", str(tree)], input=git("archive", commit), check=True,
                       timeout=60)
        return tree, commit
    for name in git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split(b"\0"):
        source = CHECKOUT / name.decode()
        if name and source.is_file():
            (tree / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name.decode())
    changed = git("status", "--short", "--untracked-files=all").decode().split("\n")
    return tree, f"{commit} + working tree ({sum(1 for c in changed if c.strip())} files changed)"


class Server:
    """``shopcast serve`` on loopback, HTTP and RTMP on free ports, session limits lifted (every
    soak client comes from 127.0.0.1). Its code comes from `tree` (first on its import path)."""

    def __init__(self, secret: str, redis_url: str, workers: int, log_path: Path,
                 tree: Path = CHECKOUT, extra_env: dict[str, str] | None = None) -> None:
        self.port, self.rtmp_port = free_port(), free_port()
        cmd = [sys.executable, "-c", LAUNCH, "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--rtmp-port", str(self.rtmp_port),
               "--workers", str(workers), "--max-sessions-per-address", "0",
               "--max-pending-sessions", "0", "--log-level", "WARNING"]
        if redis_url:
            cmd += ["--redis", redis_url]
        extra = dict(extra_env or {})
        path = [p for p in (extra.pop("PYTHONPATH_FIRST", ""), str(tree)) if p]
        env = dict(os.environ, SHOPCAST_SECRET=secret, PYTHONPATH=os.pathsep.join(path), **extra)
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=tree)
        if not _ready(self.proc, self._healthy):
            self.stop()
            raise RuntimeError(f"shopcast serve did not become healthy; see {log_path}")

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=2.0) as resp:
            return bool(resp.status == 200)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.rtmp_port}"

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def rss_kib(pid: int) -> int | None:
    """Resident set size (VmRSS) in KiB, None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_targets(pid: int) -> list[str]:
    """What each open fd points at (``socket:[...]``, ``anon_inode:[eventpoll]``, paths)."""
    out = []
    with contextlib.suppress(OSError):
        for n, fd in enumerate(Path(f"/proc/{pid}/fd").iterdir()):
            if n >= MAX_FDS_LISTED:
                break
            with contextlib.suppress(OSError):
                out.append(os.readlink(fd))
    return out


def fd_kinds(targets: list[str]) -> dict[str, int]:
    """fds by kind: socket, pipe, anon_inode:<name>, file."""
    kinds: dict[str, int] = {}
    for target in targets:
        if target.startswith(("socket:", "pipe:")):
            kind = target.split(":", 1)[0]
        elif target.startswith("anon_inode:"):
            kind = target.strip("[]").replace("[", "")
        else:
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _start_ticks(pid: int) -> int:
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def sample_processes(server_pid: int, redis_pid: int | None) -> dict[str, dict[str, Any]]:
    """RSS and fds of the server, its workers (``worker-0``.. by start time), any other child
    (by its name), and Redis."""
    procs: dict[str, dict[str, Any]] = {}
    tree = [p for p in process_tree([server_pid]) if p != server_pid]
    workers = sorted((p for p in tree if "sfu.worker" in _cmdline(p)), key=_start_ticks)
    named = [("server", server_pid)] + [(f"worker-{i}", p) for i, p in enumerate(workers)]
    for pid in sorted(set(tree) - set(workers), key=_start_ticks):
        with contextlib.suppress(OSError):
            named.append((f"{Path(f'/proc/{pid}/comm').read_text().strip()}-{pid}", pid))
    if redis_pid is not None:
        named.append(("redis", redis_pid))
    for label, pid in named:
        rss = rss_kib(pid)
        if rss is None:
            continue
        targets = fd_targets(pid)
        procs[label] = {"pid": pid, "rss_kib": rss, "fds": len(targets),
                        "fd_kinds": fd_kinds(targets)}
    return procs
