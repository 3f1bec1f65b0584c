"""Where does a growing soak's memory go? A debug run (``--trace``) starts the server with a
``sitecustomize`` of our own first on its import path. In every server process (workers too)
the first SIGUSR1, sent after the warm-up, counts the live objects by type and starts
tracemalloc; the second, at the idle end, counts them again and takes a tracemalloc snapshot.
What the snapshot holds was allocated after the warm-up and is still alive with every room
closed: the retained growth, by the line (and stack) that allocated it; the type counts say
which objects grew in number.

With ``--trace-frames 0`` only the objects are counted (two garbage collections and a count per
process, no tracemalloc): cheap enough to ride along a real soak. Tracemalloc slows the server
and adds to its RSS (on a busy 2-core machine, enough to make clients time out), so a run with
frames is for finding the line, and its figures are not the soak's.
"""

from __future__ import annotations

import json
import os
import signal
import tracemalloc
from pathlib import Path
from typing import Any

SITECUSTOMIZE = '''
import gc, json, os, signal, tracemalloc, collections
_dir = os.environ.get("SHOPCAST_SOAK_TRACE_DIR")
if _dir:
    _n = [0]
    def _dump(signum, frame):
        _n[0] += 1
        base = os.path.join(_dir, f"{os.getpid()}-{_n[0]}")
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(base + ".snap")
        gc.collect()
        kinds = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        with open(base + ".types.json", "w") as out:
            json.dump(dict(kinds.most_common(300)), out)
        frames = int(os.environ.get("SHOPCAST_SOAK_TRACE_FRAMES", "0"))
        if frames and not tracemalloc.is_tracing():
            tracemalloc.start(frames)
    signal.signal(signal.SIGUSR1, _dump)
'''
TOP = 15


def prepare(trace_dir: Path, frames: int) -> dict[str, str]:
    """Write the sitecustomize; the environment to add to the server's (PYTHONPATH first)."""
    hook = trace_dir / "hook"
    hook.mkdir(parents=True, exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"SHOPCAST_SOAK_TRACE_DIR": str(trace_dir),
            "SHOPCAST_SOAK_TRACE_FRAMES": str(frames), "PYTHONPATH_FIRST": str(hook)}


def signal_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass


def compare(trace_dir: Path, pid: int) -> dict[str, Any] | None:
    """What one pid retained since its first dump: its object types that grew in number and,
    if it traced, the biggest allocation sites of its final snapshot (with their stacks); None
    if a dump is missing."""
    a, b = trace_dir / f"{pid}-1", trace_dir / f"{pid}-2"
    if not (a.with_suffix(".types.json").exists() and b.with_suffix(".types.json").exists()):
        return None
    lines = []
    total = None
    if b.with_suffix(".snap").exists():
        new = tracemalloc.Snapshot.load(str(b.with_suffix(".snap")))
        total = round(sum(s.size for s in new.statistics("filename")) / 1024)
        for stat in new.statistics("traceback")[:TOP]:
            lines.append({"size_kib": round(stat.size / 1024, 1), "count": stat.count,
                          "stack": [f"{f.filename}:{f.lineno}" for f in stat.traceback][:8]})
    old_types = json.loads(a.with_suffix(".types.json").read_text())
    new_types = json.loads(b.with_suffix(".types.json").read_text())
    grown = sorted(((n - old_types.get(k, 0), k, n) for k, n in new_types.items()),
                   reverse=True)[:TOP]
    return {"retained_since_warmup_kib": total,
            "top_lines": lines,
            "top_types": [{"type": k, "grew": d, "now": n} for d, k, n in grown if d > 0]}
