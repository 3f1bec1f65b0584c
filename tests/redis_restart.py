"""A redis-server a test can kill with SIGKILL and start again on the same port and directory:
from its append-only file (nothing lost) or wiped (an empty restart), for the Redis outage and
data-loss tests (issue 14 #4)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import free_port, redis_binary, start_redis, stop_redis

if TYPE_CHECKING:
    pass


class RedisProcess:
    """One redis-server on a fixed loopback port and directory, so it can come back there."""

    def __init__(self, directory: Path, *, appendonly: bool, extra: tuple[str, ...] = ()
                 ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        proc = start_redis(redis_binary(), self.port, str(self.directory),
                           appendonly=self.appendonly, extra=self.extra)
        assert proc is not None, f"redis-server did not start on port {self.port}"
        self.proc = proc

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=5)

    def wipe(self) -> None:
        shutil.rmtree(self.directory)

    def stop(self) -> None:
        if self.proc is not None:
            stop_redis(self.proc)


@pytest.fixture
def redis_proc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisProcess]:
    """``aof`` (the default), ``volatile`` (no persistence at all) or ``renamed`` (AOF, and
    CONFIG renamed away as managed services do), by indirect param."""
    kind = getattr(request, "param", "aof")
    redis = RedisProcess(tmp_path / "redis", appendonly=kind != "volatile",
                         extra=("--rename-command", "CONFIG", "") if kind == "renamed" else ())
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
