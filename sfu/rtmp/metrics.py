"""Prometheus text for RTMP ingest: the door's connections and refusals, and per RTMP anchor
what an operator must see (B-frames that cost a transcode, codec time, drops and returns).
An anchor is labelled by its room and ``slot`` (an RTMP anchor is slot 0), never by its
session id (the name of its resource) or its identity."""

from __future__ import annotations

from sfu.node import SfuNode
from sfu.rtmp.door import RtmpDoor
from sfu.rtmp.publisher import RtmpPublisher


def render(door: RtmpDoor | None, node: SfuNode) -> list[str]:
    if door is None:
        return []
    lines = [
        "# HELP shopcast_rtmp_connections Open RTMP connections (publishing or not yet).",
        "# TYPE shopcast_rtmp_connections gauge",
        f"shopcast_rtmp_connections {len(door.server.connections)}",
        "# HELP shopcast_rtmp_refused_total RTMP publishes refused, by error code.",
        "# TYPE shopcast_rtmp_refused_total counter",
    ]
    lines += [f'shopcast_rtmp_refused_total{{code="{code}"}} {count}'
              for code, count in sorted(door.refused.items())]
    anchors = [p for room in node.rooms.values() for p in room.publishers.values()
               if isinstance(p, RtmpPublisher)]
    series = {
        "shopcast_rtmp_bframes": ("gauge", "1 when the encoder sends B-frames (set bframes=0: "
                                           "WebRTC viewers get a transcode meanwhile)"),
        "shopcast_rtmp_codec_seconds_total": ("counter", "codec thread time of the room's "
                                                         "RTMP conversions, by kind"),
        "shopcast_rtmp_reconnects_total": ("counter", "re-publishes within the grace period"),
        "shopcast_rtmp_media_errors_total": ("counter", "encoders cut for unusable media"),
    }
    for name, (kind, help_text) in series.items():
        lines += [f"# HELP {name} {help_text}.", f"# TYPE {name} {kind}"]
        for anchor in anchors:
            label = f'room="{anchor.room}",slot="{anchor.slot}"'
            if name == "shopcast_rtmp_bframes":
                lines.append(f"{name}{{{label}}} {int(anchor.video.bframes)}")
            elif name == "shopcast_rtmp_codec_seconds_total":
                audio = anchor.audio.codec_busy_s if anchor.audio is not None else 0.0
                lines.append(f'{name}{{{label},kind="video"}} {anchor.video.codec_busy_s:.3f}')
                lines.append(f'{name}{{{label},kind="audio"}} {audio:.3f}')
            elif name == "shopcast_rtmp_reconnects_total":
                lines.append(f"{name}{{{label}}} {anchor.reconnects}")
            else:
                lines.append(f"{name}{{{label}}} {anchor.errors}")
    return lines
