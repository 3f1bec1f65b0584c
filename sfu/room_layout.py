"""The shape of a room that viewers negotiate against, in any process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpCodecParameters

from sfu.ipc import codec_from_dict, codec_to_dict

KINDS = ("audio", "video")


@dataclass(frozen=True)
class RoomLayout:
    """What a viewer negotiates against: each publisher slot's SSRC per kind, and the room's
    codec per kind (every publisher of a room sends the anchor's codecs)."""

    ssrcs: list[dict[str, int]]
    codecs: dict[str, RTCRtpCodecParameters]

    def to_message(self) -> dict[str, Any]:
        """For the control channel to a worker process."""
        return {
            "ssrcs": self.ssrcs,
            "codecs": {kind: codec_to_dict(codec) for kind, codec in self.codecs.items()},
        }

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> RoomLayout:
        return cls(
            ssrcs=[dict(slot) for slot in data["ssrcs"]],
            codecs={kind: codec_from_dict(codec) for kind, codec in data["codecs"].items()},
        )
