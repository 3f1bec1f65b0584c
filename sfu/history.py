"""Shared packet history: one ring per published track answers every viewer's NACKs."""

from __future__ import annotations


class PacketHistory:
    """The last ``size`` canonical RTP packets, indexed by sequence number.

    Packets are stored as bytes; the sequence number is read back from the header, so a slot
    overwritten by a newer packet is never mistaken for the one asked for.
    """

    __slots__ = ("_mask", "_slots")

    def __init__(self, size: int = 1024) -> None:
        if size <= 0 or size & (size - 1):
            raise ValueError("history size must be a power of two")
        self._slots: list[bytes | None] = [None] * size
        self._mask = size - 1

    def put(self, sequence_number: int, packet: bytes) -> None:
        self._slots[sequence_number & self._mask] = packet

    def get(self, sequence_number: int) -> bytes | None:
        packet = self._slots[sequence_number & self._mask]
        if packet is None or ((packet[2] << 8) | packet[3]) != sequence_number:
            return None
        return packet

    def clear(self) -> None:
        self._slots = [None] * len(self._slots)
