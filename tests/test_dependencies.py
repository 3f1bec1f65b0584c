"""The dependency rule, checked: ``signaling`` never imports ``sfu``; ``loadtest`` imports neither
(nor the launcher that wires them); ``common`` imports no ShopCast package; neither plane imports
the launcher; and a media worker process, which serves no HTTP, loads neither aiohttp nor PyJWT.

The first three read the source (every ``import``, including ones inside functions or under
``TYPE_CHECKING``); the last spawns a real worker the way ``WorkerPool`` does and reads its
``sys.modules`` once it has started and stopped.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sfu.settings import NodeSettings

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level packages it must never import
RULES = {
    "sfu": ("shopcast", "loadtest", "benchmarks"),
    "signaling": ("sfu", "shopcast", "loadtest", "benchmarks"),
    "loadtest": ("sfu", "signaling", "shopcast", "benchmarks"),
    "common": ("sfu", "signaling", "shopcast", "loadtest", "benchmarks"),
}

WORKER_FORBIDDEN = ("aiohttp", "jwt")
WORKER_START_S = 30.0
WORKER_STOP_S = 15.0


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved; a name
    imported from a module counts as ``module.name``, since it may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = path.relative_to(root).with_suffix("").parts
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # the package of a.b.c and of a/b/__init__ is a.b: parts[:-1]
                base = parts[: len(parts) - node.level]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in sorted(imported_modules(path)):
            top = name.split(".", 1)[0]
            if top in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_keeps_the_dependency_rule(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists()
    assert violations(package, RULES[package]) == []


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The scan itself can fail: plain, from, nested and relative imports are all seen."""
    package = tmp_path / "signaling" / "api"
    package.mkdir(parents=True)
    probe = package / "probe.py"
    probe.write_text(
        "import sfu.node\n"
        "from sfu import worker\n"
        "def f():\n    from sfu.errors import BadRoom\n"
        "from . import sibling\n"
        "from ..bus import Bus\n"
    )
    names = imported_modules(probe, tmp_path)
    assert {"sfu.node", "sfu.worker", "sfu.errors.BadRoom", "signaling.api.sibling",
            "signaling.bus.Bus"} <= names


_WORKER_PROBE = """
import atexit, json, os, runpy, sys
out = int(sys.argv[1])
atexit.register(lambda: os.write(out, json.dumps(sorted(sys.modules)).encode()))
sys.argv = ["sfu.worker", *sys.argv[2:]]
runpy.run_module("sfu.worker", run_name="__main__", alter_sys=True)
"""


def test_a_worker_process_loads_no_http_or_jwt_code() -> None:
    """Started exactly as ``WorkerPool.start`` starts one (``python -m sfu.worker`` with its two
    inherited sockets and the settings as JSON), told to stop by closing its control channel."""
    control_here, control_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    media_here, media_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_modules, write_modules = os.pipe()
    settings = dataclasses.asdict(NodeSettings(workers=1))
    fds = (control_there.fileno(), media_there.fileno(), write_modules)
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER_PROBE, str(write_modules),
         "--control-fd", str(control_there.fileno()), "--media-fd", str(media_there.fileno()),
         "--settings", json.dumps(settings)],
        pass_fds=fds, cwd=ROOT,
    )
    try:
        control_there.close()
        media_there.close()
        os.close(write_modules)
        ready, _, _ = select.select([control_here], [], [], WORKER_START_S)
        assert ready, f"the worker sent nothing within {WORKER_START_S} s"
        assert control_here.recv(65536), "the worker's first message (ready) is not empty"
        control_here.close()  # the worker stops when its control channel closes
        assert process.wait(WORKER_STOP_S) == 0
        with open(read_modules, "rb") as reader:
            modules = json.loads(reader.read())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        control_here.close()
        media_here.close()
    assert "sfu.viewer" in modules and "aiortc" in modules, "the probe saw a real worker"
    loaded = [m for m in modules if m.split(".", 1)[0] in WORKER_FORBIDDEN]
    assert loaded == []

