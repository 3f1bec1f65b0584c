"""Server event types the control plane publishes on the bus (msgpack maps with ``type``).

Room-state events carry ``room`` and the record they describe in JSON form. The commerce and
chat events of issue 6 join this list; every event also gets the room's ``seq`` from the bus.
"""

from __future__ import annotations

from enum import StrEnum


class RoomEvent(StrEnum):
    PARTICIPANT_JOINED = "participant_joined"  # participant: {...}
    PARTICIPANT_LEFT = "participant_left"  # participant: {...}, reason: "left"|"kicked"|"closed"
    PARTICIPANT_UPDATED = "participant_updated"  # participant: {...} (metadata changed)
    TRACK_PUBLISHED = "track_published"  # participant_sid, track: {...}
    TRACK_UNPUBLISHED = "track_unpublished"  # participant_sid, track: {...}
    TRACK_MUTED = "track_muted"  # participant_sid, track: {...} with muted true/false
    ROOM_UPDATED = "room_updated"  # room: {...} (metadata changed)
    ROOM_CLOSED = "room_closed"  # room: {...}
    VIEWERS = "viewers"  # count, by_transport: {...}


class Webhook(StrEnum):
    """Webhook event names, as posted in the body's ``event`` field."""

    ROOM_STARTED = "room_started"
    ROOM_FINISHED = "room_finished"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"
    TRACK_PUBLISHED = "track_published"
    TRACK_UNPUBLISHED = "track_unpublished"
    ORDER_CREATED = "order_created"  # order: {...} (a flash-sale purchase)
    SNAPSHOT = "snapshot"  # room: {name}, snapshot: {taken_at, jpeg_base64, ...} (compliance)
