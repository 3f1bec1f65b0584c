"""The files of one recording: PyAV's fragmented MP4 bytes, cut into segment files.

The MP4 muxer writes its initialization (``ftyp`` + ``moov``) once, then one ``moof`` +
``mdat`` pair per fragment, each as soon as the fragment is complete (a kill leaves every
finished fragment on disk). This sink follows the top-level boxes as they are written; when a
cut is asked for (``cut_at``: the keyframe past the segment length) the ``moof`` whose
fragment starts there (read from its ``tfdt``: the muxer's interleaver may write the fragment
before it later than that keyframe was handed over) opens a new file that starts with a copy
of the initialization, so every segment plays alone, and segment 0 + the later segments
without their copy of it are the recording as one stream (``signaling.recordings_index``).
The bytes themselves go to the files on the ``DiskWriter``'s thread (``sfu/recording/disk.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sfu.recording.disk import DiskWriter
from signaling.recordings_index import SEGMENT_NAME

BOX_HEADER = 8
LARGE_BOX_HEADER = 16  # size field 1: a 64-bit size follows the type


class SegmentFiles:
    """A write-only file object for PyAV; ``on_segment(index)`` when a segment file opens."""

    def __init__(self, folder: Path, on_segment: Callable[[int], None]) -> None:
        self.folder = folder
        self.on_segment = on_segment
        self.disk = DiskWriter(f"rec-{folder.name}")  # the syscalls, off the event loop
        self.index = 0
        self.init = b""  # ftyp + moov, known at the first moof
        self._init_done = False
        self._pending = bytearray()  # bytes before the first moof: the initialization
        self._head = b""  # a box header split across writes
        self._left = 0  # bytes of the current top-level box still to come
        self._cut: tuple[int, int] | None = None  # (track id, first tfdt of the next segment)
        self._moof: bytearray | None = None  # a moof being collected (read whole before it goes)
        self.bytes = 0  # the recording's byte stream (without the repeated initializations)
        self.segment_bytes = 0  # the current file's size (once the disk writer caught up)
        self.disk.open(self.folder / SEGMENT_NAME.format(0))

    def cut_at(self, track_id: int, tfdt: int) -> None:
        """Start the next segment at the first fragment of ``track_id`` from ``tfdt`` on
        (in the track's timescale)."""
        self._cut = (track_id, tfdt)

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._left == 0:
                pos = self._read_header(view, pos)
                continue
            n = min(self._left, len(view) - pos)
            if self._moof is not None:
                self._moof += view[pos:pos + n]
            else:
                self._emit(view[pos:pos + n])
            self._left -= n
            pos += n
            if self._left == 0 and self._moof is not None:
                moof, self._moof = bytes(self._moof), None
                self._fragment_starts(moof)
                self._emit(memoryview(moof))
        return len(data)

    def _read_header(self, view: memoryview, pos: int) -> int:
        """Collect a top-level box header; at a ``moof``, finish the init or cut a segment."""
        wanted = BOX_HEADER
        if len(self._head) >= BOX_HEADER and int.from_bytes(self._head[:4], "big") == 1:
            wanted = LARGE_BOX_HEADER
        take = min(wanted - len(self._head), len(view) - pos)
        self._head += bytes(view[pos:pos + take])
        pos += take
        if len(self._head) < wanted:
            return pos
        size = int.from_bytes(self._head[:4], "big")
        if size == 1 and wanted == BOX_HEADER:
            return pos  # a 64-bit size follows
        if size == 1:
            size = int.from_bytes(self._head[8:16], "big")
        head, self._head = self._head, b""
        self._left = max(size - len(head), 0)
        if head[4:8] == b"moof" and self._left:
            self._moof = bytearray(head)
        else:
            self._emit(memoryview(head))
        return pos

    def _fragment_starts(self, moof: bytes) -> None:
        if not self._init_done:
            self._init_done = True
            self.init = bytes(self._pending)
            self._pending.clear()
        elif self._cut is not None and _reaches(moof, *self._cut):
            self._cut = None
            self.index += 1
            self.disk.open(self.folder / SEGMENT_NAME.format(self.index))
            self.segment_bytes = 0
            self._write(memoryview(self.init))
            self.on_segment(self.index)

    def _emit(self, data: memoryview) -> None:
        if not self._init_done:
            self._pending += data
        self.bytes += len(data)
        self._write(data)

    def _write(self, data: memoryview) -> None:
        self.disk.write(bytes(data))
        self.segment_bytes += len(data)

    def close(self) -> None:
        """No more writes; ``disk.join()`` waits until they are all on disk."""
        self.disk.close()


def _children(box: bytes, start: int) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the boxes inside ``box`` from ``start``."""
    found = []
    pos = start
    while pos + BOX_HEADER <= len(box):
        size = int.from_bytes(box[pos:pos + 4], "big")
        if size < BOX_HEADER or pos + size > len(box):
            break
        found.append((box[pos + 4:pos + 8], pos, size))
        pos += size
    return found


def _reaches(moof: bytes, track_id: int, tfdt: int) -> bool:
    """Whether the fragment's ``track_id`` run starts at ``tfdt`` or later (its ``tfdt``)."""
    for kind, traf, size in _children(moof, BOX_HEADER):
        if kind != b"traf":
            continue
        inner = {k: o for k, o, _ in _children(moof[:traf + size], traf + BOX_HEADER)}
        tfhd, base = inner.get(b"tfhd"), inner.get(b"tfdt")
        if tfhd is None or base is None:
            continue
        if int.from_bytes(moof[tfhd + 12:tfhd + 16], "big") != track_id:
            continue
        wide = moof[base + 8] == 1  # version 1: a 64-bit time
        value = moof[base + 12:base + (20 if wide else 16)]
        return int.from_bytes(value, "big") >= tfdt
    return False
