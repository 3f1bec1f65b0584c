"""Compliance snapshots on the control plane's side: the latest JPEG of each room, in the store
so any front door can answer ``GET /api/v1/rooms/{room}/snapshot`` whichever node took it, and
the signed ``snapshot`` webhook for an external review service.

The latest is a key of the room's own scope (``snapshot``, with a TTL), so closing the room
takes it too and nothing is kept per room name ever seen.

The webhook carries the JPEG itself (base64 in ``snapshot.jpeg_base64``), not a URL to fetch:
the HMAC signature then covers the very picture the reviewer judges, the reviewer needs no way
back into the cluster (review services usually sit outside it) and nothing has to be kept for
it to fetch later. A keyframe at 640x360 is a few KB to a few tens of KB of JPEG (a third more
in base64), one per room per interval; the bytes are capped (``MAX_JPEG_BYTES``: a larger
picture goes to the store and the route but not into the webhook, which then says
``jpeg_base64: null`` and the reviewer fetches it from the route with an admin token).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Protocol

import msgpack

from signaling.events import Webhook
from signaling.store import Store
from signaling.webhooks import Webhooks

KEY = "snapshot"  # in the room's scope
MAX_JPEG_BYTES = 512 * 1024
MIN_KEEP_MS = 60_000


async def save_snapshot(store: Store, webhooks: Webhooks, room: str, *, taken_at: float,
                        jpeg: bytes, width: int, height: int, keep_ms: int) -> None:
    """Keep ``jpeg`` as the room's latest for ``keep_ms`` (at least a minute), then queue the
    webhook (``emit`` never waits for a receiver)."""
    record = {"taken_at": taken_at, "width": width, "height": height, "jpeg": jpeg}
    await store.put(room, KEY, msgpack.packb(record, use_bin_type=True),
                    ttl_ms=max(keep_ms, MIN_KEEP_MS))
    if not webhooks.enabled:
        return
    carried = len(jpeg) <= MAX_JPEG_BYTES
    webhooks.emit(Webhook.SNAPSHOT, room={"name": room}, snapshot={
        "taken_at": taken_at, "width": width, "height": height, "content_type": "image/jpeg",
        "bytes": len(jpeg), "jpeg_base64": base64.b64encode(jpeg).decode() if carried else None,
        "url": f"/api/v1/rooms/{room}/snapshot",
    })


class Snapshot(Protocol):
    """A snapshot as the media plane hands it over (``sfu.snapshots.Snapshot``; this side
    loads no media code)."""

    @property
    def room(self) -> str: ...
    @property
    def taken_at(self) -> float: ...
    @property
    def jpeg(self) -> bytes: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


def snapshot_sink(store: Store, webhooks: Webhooks, keep_ms: int
                  ) -> Callable[[Snapshot], Awaitable[None]]:
    """The media plane's ``SnapshotSink``: each snapshot to the store and the webhook."""
    async def sink(snapshot: Snapshot) -> None:
        await save_snapshot(store, webhooks, snapshot.room, taken_at=snapshot.taken_at,
                            jpeg=snapshot.jpeg, width=snapshot.width, height=snapshot.height,
                            keep_ms=keep_ms)
    return sink


async def latest_snapshot(store: Store, room: str) -> tuple[float, bytes] | None:
    """(taken_at, JPEG) of the room's latest snapshot, while it is kept."""
    raw = await store.get(room, KEY)
    if raw is None:
        return None
    record = msgpack.unpackb(raw, raw=False)
    return float(record["taken_at"]), bytes(record["jpeg"])
