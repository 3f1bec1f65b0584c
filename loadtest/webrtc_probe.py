"""Moved: the probe became ``python -m loadtest webrtc`` (loadtest.webrtc).

The names other probes import from here now live in loadtest.stats (tokens, percentiles,
reports) and loadtest.procstat (CPU from /proc); this module only re-exports them so the FLV
and live probes keep working until they import from there directly.
"""

from __future__ import annotations

from loadtest.procstat import CpuWindow, process_tree, resolve_server_pids
from loadtest.stats import mint_token, percentiles, write_report

__all__ = [
    "CpuWindow", "mint_token", "percentiles", "process_tree", "resolve_server_pids",
    "write_report",
]
