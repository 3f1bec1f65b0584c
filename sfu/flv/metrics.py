"""Prometheus text for the HTTP-FLV output: readers, skips and drops, GOP age, codec time.

One sample per live room (label ``room``); counters restart when a room's output is rebuilt
(a new anchor), which Prometheus' ``rate()`` treats as a counter reset.
"""

from __future__ import annotations

from sfu.flv.manager import FlvManager

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "shopcast_flv_live": ("gauge", "1 while the room's FLV stream has its headers (joinable)."),
    "shopcast_flv_readers": ("gauge", "HTTP-FLV readers connected now."),
    "shopcast_flv_readers_total": ("counter", "HTTP-FLV readers that joined."),
    "shopcast_flv_readers_closed_total": (
        "counter",
        "HTTP-FLV readers that left, by reason (stuck: dropped for not reading).",
    ),
    "shopcast_flv_reader_skips_total": (
        "counter",
        "Times a reader over its latency budget was skipped to the newest keyframe.",
    ),
    "shopcast_flv_bytes_sent_total": ("counter", "FLV bytes written to readers."),
    "shopcast_flv_tags_total": ("counter", "FLV tags produced (once per room, not per reader)."),
    "shopcast_flv_keyframes_total": ("counter", "Keyframes in the room's FLV stream."),
    "shopcast_flv_gop_age_ms": (
        "gauge",
        "How far the GOP cache's keyframe is behind the newest tag (what a joiner replays).",
    ),
    "shopcast_flv_codec_busy_seconds_total": (
        "counter",
        "Time spent transcoding for FLV (Opus->AAC, VP8->H.264), once per room.",
    ),
    "shopcast_flv_mixing": ("gauge", "1 while the room's FLV stream is the co-host mix."),
    "shopcast_flv_mixer_cpu_seconds_total": (
        "counter",
        "CPU (thread time) of the co-host mix: decoding each publisher, composing, encoding "
        "H.264, decoding and mixing co-host audio.",
    ),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(manager: FlvManager) -> list[str]:
    """Prometheus exposition lines (no trailing newline), to join with the node's others."""
    samples: dict[str, list[str]] = {name: [] for name in METRICS}
    for room, output in sorted(manager.outputs.items()):
        stats = output.stats()
        label = f'room="{_label(room)}"'

        def add(name: str, value: float | int, extra: str = "", label: str = label) -> None:
            samples[name].append(f"{name}{{{label}{extra}}} {value}")

        add("shopcast_flv_live", int(output.live))
        add("shopcast_flv_readers", stats["readers"])
        add("shopcast_flv_readers_total", stats["readers_total"])
        for reason, count in sorted(stats["closed_readers"].items()):
            add("shopcast_flv_readers_closed_total", count, f',reason="{_label(reason)}"')
        add("shopcast_flv_reader_skips_total", stats["skips_total"])
        add("shopcast_flv_bytes_sent_total", stats["bytes_sent_total"])
        add("shopcast_flv_tags_total", stats["tags"])
        add("shopcast_flv_keyframes_total", stats["keyframes"])
        if stats["gop_age_ms"] is not None:
            add("shopcast_flv_gop_age_ms", stats["gop_age_ms"])
        add("shopcast_flv_codec_busy_seconds_total", round(stats["codec_busy_s"], 3))
        add("shopcast_flv_mixing", int(stats["mixing"]))
        add("shopcast_flv_mixer_cpu_seconds_total", round(stats["mixer_cpu_s"], 3))
    lines: list[str] = []
    for name, (kind, text) in METRICS.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples[name]]
    return lines
