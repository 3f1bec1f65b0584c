"""What the control plane asks of the media plane: end sessions and mute tracks.

The SFU implements ``MediaControl`` (signaling never imports sfu); ``RoomService`` calls it
when a room is closed, a participant kicked or a track muted over REST. Participants are
addressed by session id (``sid``, the SFU's leg id) and tracks by the ``sid`` the SFU reported
in ``SessionReporter.track_published``.
"""

from __future__ import annotations

from typing import Protocol


class MediaControl(Protocol):
    async def end_room(self, room: str) -> int:
        """End every session of ``room`` on this node; return how many were ended."""
        ...

    async def end_session(self, room: str, sid: str) -> bool:
        """End one session; False if this node has no such session."""
        ...

    async def end_identity(self, room: str, identity: str) -> int:
        """End what ``identity`` has in ``room`` that is not a session (HTTP-FLV responses),
        on a kick or ban; return how many on this node."""
        ...

    async def end_publishers(self, room: str) -> int:
        """End every publisher session of ``room`` on this node (WHIP anchor, co-hosts, RTMP
        encoder): a forbid; return how many."""
        ...

    async def mute_track(self, room: str, sid: str, track_sid: str, muted: bool) -> bool:
        """Stop (or resume) forwarding one published track; False if there is no such track."""
        ...


class NoMedia:
    """A control plane without a media plane (a signaling-only process, or tests)."""

    async def end_room(self, room: str) -> int:
        return 0

    async def end_session(self, room: str, sid: str) -> bool:
        return False

    async def end_identity(self, room: str, identity: str) -> int:
        return 0

    async def end_publishers(self, room: str) -> int:
        return 0

    async def mute_track(self, room: str, sid: str, track_sid: str, muted: bool) -> bool:
        return False
