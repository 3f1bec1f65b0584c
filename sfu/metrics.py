"""Prometheus text for the media plane: what an operator needs to see a room's health.

A track is labelled by its room, kind and publisher ``slot`` (0 = the anchor), never by a
session id or an identity: a session id is what a WHIP/WHEP resource is named by, and an
identity is personal; neither belongs on a page anyone who reaches ``/metrics`` may read."""

from __future__ import annotations

from sfu import events_channel
from sfu.admission import DOORS, REASONS
from sfu.node import SfuNode


def render(node: SfuNode) -> list[str]:
    lines = [
        "# HELP shopcast_rooms Rooms with at least one session on this node.",
        "# TYPE shopcast_rooms gauge",
        f"shopcast_rooms {len(node.rooms)}",
        "# HELP shopcast_sessions WebRTC sessions by role.",
        "# TYPE shopcast_sessions gauge",
    ]
    roles = {"publisher": 0, "viewer": 0}
    for session in node.sessions.values():
        roles[session.role] = roles.get(session.role, 0) + 1
    lines += [f'shopcast_sessions{{role="{role}"}} {count}' for role, count in roles.items()]
    room_lines: dict[str, list[str]] = {
        "shopcast_room_viewers": [],
        "shopcast_room_live": [],
        "shopcast_track_packets_total": [],
        "shopcast_track_bytes_total": [],
        "shopcast_track_keyframes_total": [],
        "shopcast_track_keyframe_requests_total": [],
        "shopcast_track_retransmits_total": [],
        "shopcast_track_fast_starts_total": [],
    }
    for room in node.rooms.values():
        label = f'room="{room.name}"'
        room_lines["shopcast_room_viewers"].append(f"{{{label}}} {len(room.viewers)}")
        room_lines["shopcast_room_live"].append(f"{{{label}}} {int(room.live)}")
        for producer in room.producers():
            track = f'{label},kind="{producer.kind}",slot="{producer.slot_index}"'
            retransmits, fast_starts = producer.retransmits, producer.fast_starts
            if node.workers is not None:
                retransmits += node.workers.counter("retransmits", producer.key)
                fast_starts += node.workers.counter("fast_starts", producer.key)
            room_lines["shopcast_track_packets_total"].append(f"{{{track}}} {producer.packets}")
            room_lines["shopcast_track_bytes_total"].append(f"{{{track}}} {producer.octets}")
            room_lines["shopcast_track_keyframes_total"].append(f"{{{track}}} {producer.keyframes}")
            room_lines["shopcast_track_keyframe_requests_total"].append(
                f"{{{track}}} {producer.keyframe_requests}"
            )
            room_lines["shopcast_track_retransmits_total"].append(f"{{{track}}} {retransmits}")
            room_lines["shopcast_track_fast_starts_total"].append(f"{{{track}}} {fast_starts}")
    for name, samples in room_lines.items():
        kind = "counter" if name.endswith("_total") else "gauge"
        lines.append(f"# TYPE {name} {kind}")
        lines += [name + sample for sample in samples]
    slow_closed = events_channel.stats.slow_closed
    if node.workers is not None:
        slow_closed += node.workers.counter("events_slow_closed", 0)
    lines += [
        "# HELP shopcast_events_slow_closed_total Events data channels closed because the "
        "client did not drain them (past 1 MiB buffered); the client re-opens it with its seq.",
        "# TYPE shopcast_events_slow_closed_total counter",
        f"shopcast_events_slow_closed_total {slow_closed}",
        "# HELP shopcast_events_refused_total Client event messages refused (error "
        "too_many_pending) while 256 of the same participant's waited to be handled.",
        "# TYPE shopcast_events_refused_total counter",
        f"shopcast_events_refused_total {node.events.refused if node.events else 0}",
    ]
    if node.workers is not None:
        lines += [
            "# HELP shopcast_worker_bad_messages_total Worker control messages refused (logged,"
            " not acted on), by reason, at both ends of every worker's channel.",
            "# TYPE shopcast_worker_bad_messages_total counter",
        ]
        lines += [f'shopcast_worker_bad_messages_total{{reason="{reason}"}} {count}'
                  for reason, count in sorted(node.workers.bad_messages().items())]
    lines += node.network_quality.metrics()  # publishers' uplink scores (by door)
    return lines + _admission(node)


def _admission(node: SfuNode) -> list[str]:
    """The node's session limits (``sfu/admission.py``): refusals by reason, and what counts."""
    admission = node.admission
    lines = [
        "# HELP shopcast_session_refusals_total WebRTC sessions refused with 429 by the node's "
        "session limits, by door (whip: publish over WHIP or /ws; whep: play) and reason.",
        "# TYPE shopcast_session_refusals_total counter",
    ]
    lines += [f'shopcast_session_refusals_total{{door="{door}",reason="{reason}"}} '
              f"{admission.refused[(door, reason)]}" for door in DOORS for reason in REASONS]
    lines += [
        "# HELP shopcast_sessions_pending WebRTC sessions answered but not yet connected.",
        "# TYPE shopcast_sessions_pending gauge",
        f"shopcast_sessions_pending {admission.pending()}",
    ]
    return lines
