"""The shape of a room that viewers negotiate against, in any process."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpCodecParameters

KINDS = ("audio", "video")


@dataclass(frozen=True)
class RoomLayout:
    """What a viewer negotiates against: each publisher slot's SSRC per kind, and the room's
    codec per kind (every publisher of a room sends the anchor's codecs). Crosses to worker
    processes as ``sfu.worker_protocol.Layout``."""

    ssrcs: list[dict[str, int]]
    codecs: dict[str, RTCRtpCodecParameters]
