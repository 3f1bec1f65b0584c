"""Prometheus text for the control plane; the launcher appends it to the SFU's lines.

Room and session figures come from the store, so in multi-node mode every signaling process
reports the same cluster-wide numbers; webhook and bus counters are this process's own.
"""

from __future__ import annotations

from signaling.service import Signaling
from signaling.store import Transport


def _metric(lines: list[str], name: str, kind: str, text: str, samples: list[str]) -> None:
    lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
    lines += [name + sample for sample in samples]


async def render(signaling: Signaling) -> list[str]:
    store = signaling.store
    rooms = await store.list_rooms()
    by_transport = dict.fromkeys((t.value for t in Transport), 0)
    for room in rooms:
        for transport, count in (await store.room_counts(room.name)).by_transport.items():
            by_transport[transport] = by_transport.get(transport, 0) + count
    nodes = await store.list_nodes()
    stats = signaling.webhooks.stats
    lines: list[str] = []
    _metric(lines, "shopcast_api_rooms", "gauge", "Rooms in the store (all nodes).",
            [f" {len(rooms)}"])
    _metric(lines, "shopcast_api_participants", "gauge",
            "Sessions in the store by transport (all nodes).",
            [f'{{transport="{t}"}} {n}' for t, n in sorted(by_transport.items())])
    _metric(lines, "shopcast_nodes", "gauge", "Live SFU nodes in the registry by state.",
            [f'{{state="active"}} {sum(not n.draining for n in nodes)}',
             f'{{state="draining"}} {sum(n.draining for n in nodes)}'])
    _metric(lines, "shopcast_node_viewers", "gauge", "Viewers per SFU node (last heartbeat).",
            [f'{{node="{n.id}"}} {n.viewers}' for n in nodes])
    _metric(lines, "shopcast_node_publishers", "gauge", "Publishers per SFU node.",
            [f'{{node="{n.id}"}} {n.publishers}' for n in nodes])
    _metric(lines, "shopcast_node_cpu", "gauge", "CPU use per SFU node (0-1 per core).",
            [f'{{node="{n.id}"}} {n.cpu}' for n in nodes])
    _metric(lines, "shopcast_webhooks_total", "counter", "Webhook deliveries by result.",
            [f'{{result="delivered"}} {stats.delivered}', f'{{result="failed"}} {stats.failed}',
             f'{{result="retried"}} {stats.retried}', f'{{result="dropped"}} {stats.dropped}'])
    _metric(lines, "shopcast_events_published_total", "counter",
            "Room events published on the bus by this process.",
            [f" {signaling.bus.published}"])
    live = signaling.live
    _metric(lines, "shopcast_resume_limited_total", "counter",
            "Event resumes limited by this process: `rate` answered resume_limited, `size` "
            "over the per-resume caps and answered with a fresh state.",
            [f'{{reason="{r}"}} {n}' for r, n in sorted(live.resume_limited.items())])
    _metric(lines, "shopcast_likes_limited_total", "counter",
            "Like messages refused by this process's per-identity like rate (--like-rate).",
            [f" {live.likes.limited}"])
    _metric(lines, "shopcast_resumed_bytes_total", "counter",
            "Bytes of events re-sent by resumes in this process.", [f" {live.resumed_bytes}"])
    _metric(lines, "shopcast_event_subscriptions", "gauge",
            "Open event subscriptions in this process.", [f" {signaling.bus.subscriptions}"])
    lines += live.qoe.metrics()  # viewers' QoE: by transport only (signaling/live/qoe.py)
    return lines
