"""The shared NACK history."""

from __future__ import annotations

import struct

import pytest

from sfu.history import PacketHistory


def packet(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, 1000, 1234) + b"payload"


def test_returns_stored_packets_by_sequence_number() -> None:
    history = PacketHistory(16)
    for seq in range(10):
        history.put(seq, packet(seq))
    assert history.get(3) == packet(3)
    assert history.get(10) is None


def test_an_overwritten_slot_is_not_mistaken_for_an_old_packet() -> None:
    history = PacketHistory(16)
    for seq in range(40):
        history.put(seq, packet(seq))
    assert history.get(39) == packet(39)
    assert history.get(23) is None  # slot 7 now holds 39
    assert history.get(24) == packet(24)


def test_sequence_numbers_wrap_around() -> None:
    history = PacketHistory(8)
    for seq in (65534, 65535, 0, 1):
        history.put(seq, packet(seq))
    assert [history.get(s) is not None for s in (65534, 65535, 0, 1)] == [True] * 4


def test_clear_and_size_must_be_a_power_of_two() -> None:
    history = PacketHistory(8)
    history.put(1, packet(1))
    history.clear()
    assert history.get(1) is None
    with pytest.raises(ValueError):
        PacketHistory(10)
