"""Shared fixtures: a real redis-server, a running ShopCast app, and a real Chromium.

Markers (registered in pyproject.toml):

- ``slow``: takes more than a few seconds; deselect locally with ``-m 'not slow'``.
- ``browser``: drives headless Chromium. Tests that use the ``chromium`` fixture get it
  automatically, so ``-m 'not browser'`` always leaves them out.

Nothing here skips for a missing tool: a missing redis-server or Chromium fails the tests that
need it. Under ``CI=true`` any skipped test fails the run, so a green CI means everything ran.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from shopcast.config import Config
from signaling.flv_tickets import issue
from signaling.tokens import Claims, Grant, mint

if TYPE_CHECKING:
    from aiohttp import web
    from playwright.async_api import BrowserContext

CHROMIUM_PATH = "/usr/bin/chromium"  # Debian's package; Playwright's own download is not used
CHROMIUM_ARGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)
REDIS_START_TIMEOUT_S = 10.0


# --- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port that is free right now (the OS picks it, so parallel runs differ)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_pings(port: int) -> bool:
    """True once redis answers PING; a raw socket keeps this independent of the client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill if it ignores SIGTERM, so no redis outlives the session."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_redis(binary: str, port: int, directory: str, *, appendonly: bool = True,
                extra: Sequence[str] = ()) -> subprocess.Popen[bytes] | None:
    """Start redis-server on ``port`` keeping its files in ``directory``; None if it exited
    early (say, the port was taken). With ``appendonly`` it persists (AOF, fsync every
    second), as the server requires for commerce; without, it persists nothing. ``extra``:
    more server arguments."""
    cmd = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        directory,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--appendfsync",
        "everysec",
        "--daemonize",
        "no",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if _redis_pings(port):
            return proc
        time.sleep(0.05)
    stop_redis(proc)
    pytest.fail(f"redis-server did not answer PING on port {port} within {REDIS_START_TIMEOUT_S}s")


# --- redis -----------------------------------------------------------------------------------


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run ./dev setup")
    return binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real, empty redis-server on loopback with AOF on (the server refuses to run commerce
    on a Redis that persists nothing); yields ``redis://127.0.0.1:N/0``."""
    binary = redis_binary()
    directory = str(tmp_path_factory.mktemp("redis"))
    for _attempt in range(3):  # another process may grab the free port before redis binds it
        port = free_port()
        proc = start_redis(binary, port, directory)
        if proc is not None:
            break
    else:
        pytest.fail("redis-server exited at startup three times")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_redis(proc)


# --- config and server -----------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """A loopback-only config on a free port, with a fixed secret so tests can mint tokens.

    Viewers stay in the test's process (workers=0) so tests can inspect legs; a module that
    must run in both process models overrides ``config`` with ``loopback_config``.
    """
    return loopback_config(tmp_path, workers=0)


# At least shopcast.config.MIN_SECRET_BYTES (32): the server refuses shorter token keys.
TEST_SECRET = "test-secret-0123456789abcdef-0123456789"


def loopback_config(tmp_path: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = {
        "host": "127.0.0.1", "port": free_port(), "secret": TEST_SECRET,
        "secret_file": str(tmp_path / "secret"), "ice_hosts": ["127.0.0.1"],
        "rtmp_port": 0,  # tests that push RTMP ask for a free port
        **overrides,
    }
    return Config(**settings)




@dataclass
class Server:
    """A running app: its base URL, config and aiohttp Application, plus a token helper."""

    url: str
    config: Config
    app: web.Application

    def token(self, room: str, identity: str, *grants: Grant | str, ttl: int = 3600) -> str:
        """A token for ``room`` signed with this server's secret."""
        return mint(
            self.config.secret,
            room=room,
            identity=identity,
            grants=[Grant(g) for g in grants],
            ttl=ttl,
        )

    def flv_url(self, room: str, identity: str = "flv") -> str:
        """``/live/{room}.flv`` with a fresh ticket for ``identity``, as the playback plan hands
        out (``?token=`` needs ``--flv-plain-token``)."""
        ticket = issue(self.config.secret, Claims(identity, room, frozenset({Grant.SUBSCRIBE})),
                       room)
        return f"{self.url}/live/{room}.flv?ticket={ticket}"


@pytest_asyncio.fixture
async def server(config: Config) -> AsyncIterator[Server]:
    """The whole single-node app on ``config.host:config.port``, cleaned up after the test."""
    try:
        from shopcast.app import create_app
    except ImportError as exc:  # fail only the tests that need the app, not the whole suite
        pytest.fail(f"cannot import shopcast.app.create_app: {exc}")
    from aiohttp import web

    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield Server(url=f"http://{config.host}:{config.port}", config=config, app=app)
    finally:
        await runner.cleanup()


# --- chromium --------------------------------------------------------------------------------


def chromium_executable() -> str:
    """Debian's chromium; fail (never skip) when it is missing."""
    if os.access(CHROMIUM_PATH, os.X_OK):
        return CHROMIUM_PATH
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed; run ./dev setup")
    return found


@contextlib.asynccontextmanager
async def launch_chromium(
    user_data_dir: Path, extra_args: Sequence[str] = (), **options: Any
) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with fake camera/mic, as a persistent context closed on exit.

    ``options`` go to ``launch_persistent_context`` (viewport, permissions, ...).
    """
    from playwright.async_api import async_playwright

    executable = chromium_executable()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            user_data_dir=str(user_data_dir),
            executable_path=executable,
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
            **options,
        )
        try:
            yield context
        finally:
            await context.close()


@pytest_asyncio.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """One Chromium context per test; tests that need two browsers call ``launch_chromium``."""
    async with launch_chromium(tmp_path / "chromium-profile") as context:
        yield context


# --- hooks -----------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Tests sign with short, readable secrets on purpose; PyJWT's length warning is noise here."""
    config.addinivalue_line("filterwarnings", "ignore::jwt.warnings.InsecureKeyLengthWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the chromium fixture as ``browser``, so -m filters are exact."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skip hides a missing dependency, so it fails the run."""
    if _ci() and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _ci() and _skipped:
        terminalreporter.write_line(
            f"CI=true: {len(_skipped)} skipped test(s) fail the run: " + ", ".join(_skipped),
            red=True,
        )
