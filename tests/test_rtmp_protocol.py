"""The RTMP protocol pieces without a socket: AMF0, the handshake, the chunk stream reader.

The chunk reader is fed the same bytes in every split a TCP stack could deliver (one byte at
a time, random cuts) and must give the same messages; its headers are written here by a small
client-side chunker that compresses headers like ffmpeg and librtmp do (fmt 1/2/3 when fields
repeat, the extended timestamp in every chunk when the field overflows), plus hand-written
byte strings so the reader is not only checked against our own writer.
"""

from __future__ import annotations

import itertools
import random
import struct
from dataclasses import dataclass

import pytest

from sfu.rtmp import amf0, chunks
from sfu.rtmp.amf0 import UNDEFINED, AmfDate, EcmaArray
from sfu.rtmp.errors import AmfError, RtmpProtocolError
from sfu.rtmp.handshake import PACKET_SIZE, ServerHandshake

# --- AMF0 ------------------------------------------------------------------------------------


def test_amf0_round_trip_of_every_supported_type() -> None:
    values: list[object] = [
        0.0, -1.5, 1e300, 42.0,
        True, False,
        "", "publish", "héllo wörld ✓",
        "x" * 70000,  # long string (over 65535 bytes)
        None, UNDEFINED,
        {"app": "live", "tcUrl": "rtmp://127.0.0.1/live", "nested": {"a": [1.0, "b", None]}},
        EcmaArray({"duration": 0.0, "width": 320.0, "encoder": "Lavf"}),
        [1.0, "two", {"three": 3.0}, [4.0], EcmaArray()],
        {}, [],
        AmfDate(1700000000000.0, 0),
    ]
    encoded = amf0.encode(*values)
    decoded = amf0.decode(encoded)
    assert decoded == values
    assert isinstance(decoded[13], EcmaArray)
    assert not isinstance(decoded[12], EcmaArray)
    assert decoded[11] is UNDEFINED
    assert amf0.encode(*decoded) == encoded


def test_amf0_markers_and_lengths_are_the_specified_ones() -> None:
    assert amf0.encode(1.0) == b"\x00" + struct.pack(">d", 1.0)
    assert amf0.encode(True) == b"\x01\x01"
    assert amf0.encode("ab") == b"\x02\x00\x02ab"
    assert amf0.encode("y" * 65536)[:5] == b"\x0c\x00\x01\x00\x00"
    assert amf0.encode(None, UNDEFINED) == b"\x05\x06"
    one = struct.pack(">d", 1.0)
    assert amf0.encode({"a": 1.0}) == b"\x03\x00\x01a\x00" + one + b"\x00\x00\x09"
    assert amf0.encode(EcmaArray(a=True)) == b"\x08\x00\x00\x00\x01\x00\x01a\x01\x01\x00\x00\x09"
    assert amf0.encode([None]) == b"\x0a\x00\x00\x00\x01\x05"
    assert amf0.encode(7) == amf0.encode(7.0)  # ints are numbers


def test_amf0_reads_what_encoders_send() -> None:
    # A typed object decodes to its properties; an ECMA array whose count lies, or whose end
    # marker is missing at the end of the message (seen from some encoders), still reads.
    typed = b"\x10\x00\x03Foo\x00\x01k\x02\x00\x01v\x00\x00\x09"
    assert amf0.decode(typed) == [{"k": "v"}]
    lying = b"\x08\x00\x00\x00\x09\x00\x01k\x05\x00\x00\x09"
    assert amf0.decode(lying) == [{"k": None}]
    unterminated = b"\x08\x00\x00\x00\x01\x00\x01k\x05"
    assert amf0.decode(unterminated) == [{"k": None}]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x00\x00\x00", "truncated number"),
        (b"\x02\x00\x05ab", "string shorter than its length"),
        (b"\x0c\xff\xff\xff\xffab", "long string shorter than its length"),
        (b"\x03\x00\x01a\x05", "object without its end"),
        (b"\x03\x00\x01a", "object property without a value"),
        (b"\x07\x00\x01", "reference"),
        (b"\x11\x01", "AMF3 switch"),
        (b"\x04", "movie clip"),
        (b"\x42", "unknown marker"),
        (b"\x0a\xff\xff\xff\xff\x05", "strict array count over the message"),
        (b"\x02\x00\x02\xff\xfe", "string that is not UTF-8"),
        (b"\x0a\x00\x00\x00\x01" * 64 + b"\x05", "nesting past the bound"),
        (b"\x03\x00\x01a" * 64 + b"\x05", "objects nested past the bound"),
    ],
)
def test_amf0_bad_input_is_rejected(data: bytes, why: str) -> None:
    with pytest.raises(AmfError):
        amf0.decode(data)


def test_amf0_depth_bound_is_configurable() -> None:
    nested = b"\x0a\x00\x00\x00\x01" * 3 + b"\x05"
    assert amf0.decode(nested, max_depth=3) == [[[[None]]]]
    with pytest.raises(AmfError):
        amf0.decode(nested, max_depth=2)


def test_amf0_refuses_to_encode_what_it_cannot_represent() -> None:
    with pytest.raises(AmfError):
        amf0.encode(object())
    with pytest.raises(AmfError):
        amf0.encode({1: "non-string key"})


# --- handshake -------------------------------------------------------------------------------


def _c1(digest_style: bool) -> bytes:
    rng = random.Random(7)
    version = bytes((9, 0, 124, 2)) if digest_style else bytes(4)
    return bytes(4) + version + bytes(rng.getrandbits(8) for _ in range(PACKET_SIZE - 8))


@pytest.mark.parametrize("digest_style", [False, True])
def test_handshake_echoes_c1_and_hands_over_what_follows_c2(digest_style: bool) -> None:
    handshake = ServerHandshake()
    c1 = _c1(digest_style)
    reply, rest = handshake.feed(b"\x03" + c1[:100])
    assert (reply, rest) == (b"", b"")
    reply, rest = handshake.feed(c1[100:])
    assert len(reply) == 1 + 2 * PACKET_SIZE
    assert reply[0] == 3
    assert reply[5:9] == bytes(4)  # S1 announces no version: clients skip the digest check
    assert reply[1 + PACKET_SIZE:] == c1  # S2 echoes C1
    assert rest == b"" and not handshake.done
    c2 = reply[1:1 + PACKET_SIZE]
    reply, rest = handshake.feed(c2 + b"\x02chunks")
    assert reply == b"" and rest == b"\x02chunks" and handshake.done


def test_handshake_one_byte_at_a_time() -> None:
    handshake = ServerHandshake()
    data = b"\x03" + _c1(True) + bytes(PACKET_SIZE) + b"tail"
    replies = b""
    rest = b""
    for i in range(len(data)):
        reply, rest_now = handshake.feed(data[i:i + 1])
        replies += reply
        rest += rest_now
        if handshake.done:
            rest += data[i + 1:]
            break
    assert len(replies) == 1 + 2 * PACKET_SIZE
    assert rest == b"tail"


@pytest.mark.parametrize("first", [b"\x06", b"G", b"\x00", b"\xff"])
def test_handshake_refuses_other_versions(first: bytes) -> None:
    with pytest.raises(RtmpProtocolError):
        ServerHandshake().feed(first + bytes(10))


# --- chunk stream ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


class ClientChunker:
    """Writes messages the way a client does: each header as short as the previous allows."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.chunk_size = chunk_size
        self.prev: dict[int, tuple[int, int, int, int, int]] = {}  # type, len, sid, ts, field

    @staticmethod
    def basic(fmt: int, csid: int) -> bytes:
        if csid < 64:
            return bytes(((fmt << 6) | csid,))
        if csid < 320:
            return bytes((fmt << 6, csid - 64))
        return bytes(((fmt << 6) | 1, (csid - 64) & 0xFF, (csid - 64) >> 8))

    def chunks_of(self, msg: Msg) -> list[bytes]:
        prev = self.prev.get(msg.csid)
        length = len(msg.payload)
        if prev is None or prev[2] != msg.stream_id or msg.timestamp < prev[3]:
            fmt, field = 0, msg.timestamp
        else:
            field = msg.timestamp - prev[3]
            if (prev[0], prev[1]) != (msg.type_id, length):
                fmt = 1
            elif field != prev[4]:
                fmt = 2
            else:
                fmt = 3
        self.prev[msg.csid] = (msg.type_id, length, msg.stream_id, msg.timestamp, field)
        if fmt == 3:  # repeats the previous field; its extended-ness follows that field
            field = prev[4] if prev is not None else field
        ext = struct.pack(">I", field) if field >= 0xFFFFFF else b""
        header = self.basic(fmt, msg.csid)
        if fmt <= 2:
            header += min(field, 0xFFFFFF).to_bytes(3, "big")
        if fmt <= 1:
            header += length.to_bytes(3, "big") + bytes((msg.type_id,))
        if fmt == 0:
            header += struct.pack("<I", msg.stream_id)
        out = [header + ext + msg.payload[:self.chunk_size]]
        for offset in range(self.chunk_size, length, self.chunk_size):
            out.append(self.basic(3, msg.csid) + ext + msg.payload[offset:offset + self.chunk_size])
        if msg.type_id == chunks.SET_CHUNK_SIZE:
            self.chunk_size = struct.unpack(">I", msg.payload)[0]
        return out

    def write(self, messages: list[Msg]) -> bytes:
        return b"".join(b"".join(self.chunks_of(m)) for m in messages)


def read_all(data: bytes, splits: list[int], limits: chunks.ChunkLimits | None = None) -> list[Msg]:
    """Feed ``data`` cut at ``splits``; every message the reader gives back, as ``Msg``."""
    reader = chunks.ChunkReader(limits)
    out: list[Msg] = []
    cuts = [0, *sorted(splits), len(data)]
    for start, end in itertools.pairwise(cuts):
        reader.feed(data[start:end])
        while (m := reader.next_message()) is not None:
            out.append(Msg(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload))
    assert reader.buffered == 0
    return out


def media_session(rng: random.Random) -> list[Msg]:
    """Commands, then audio and video with steady and jittery deltas, a chunk size change,
    a second chunk size change, and timestamps that cross into the extended range."""
    msgs = [
        Msg(3, chunks.COMMAND_AMF0, 0, 0, amf0.encode("connect", 1.0, {"app": "live"})),
        Msg(3, chunks.COMMAND_AMF0, 0, 0, amf0.encode("createStream", 2.0, None)),
        Msg(8, chunks.COMMAND_AMF0, 1, 0, amf0.encode("publish", 3.0, None, "room1", "live")),
    ]
    ts_v, ts_a = 0, 0
    for i in range(60):
        if i == 20:
            msgs.append(Msg(2, chunks.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096)))
        if i == 40:
            msgs.append(Msg(2, chunks.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 77)))
        if i == 30:  # jump close to the 24-bit limit, then past it
            ts_v, ts_a = 0xFFFFF0, 0xFFFFF0
        size = rng.choice([5, 127, 128, 129, 300, 5000, 9000])
        msgs.append(Msg(6, chunks.VIDEO, 1, ts_v, bytes(rng.getrandbits(8) for _ in range(size))))
        msgs.append(Msg(4, chunks.AUDIO, 1, ts_a, bytes(rng.getrandbits(8) for _ in range(9))))
        ts_v += 33 if i % 7 else rng.choice([33, 34, 0])
        ts_a += 21
    msgs.append(Msg(4, chunks.AUDIO, 1, 0x1FFFFFF0, b"\xaf\x01late"))  # extended, fmt 0 or 1
    msgs.append(Msg(4, chunks.AUDIO, 1, 0x1FFFFFF0 + 21, b"\xaf\x01"))
    msgs.append(Msg(320, chunks.VIDEO, 1, 5, b"\x17\x01" * 200))  # three-byte chunk stream id
    msgs.append(Msg(70, chunks.VIDEO, 1, 6, b"\x27\x01" * 90))  # two-byte chunk stream id
    return msgs


def test_chunk_reader_gives_every_message_back_whole_and_in_order() -> None:
    msgs = media_session(random.Random(1))
    data = ClientChunker().write(msgs)
    assert read_all(data, []) == msgs


def test_chunk_reader_one_byte_at_a_time() -> None:
    msgs = media_session(random.Random(2))
    data = ClientChunker().write(msgs)
    assert read_all(data, list(range(1, len(data)))) == msgs


def test_chunk_reader_random_splits() -> None:
    rng = random.Random(3)
    msgs = media_session(rng)
    data = ClientChunker().write(msgs)
    for _ in range(20):
        splits = rng.sample(range(1, len(data)), rng.randint(1, 400))
        assert read_all(data, splits) == msgs


def test_chunk_reader_interleaved_chunk_streams() -> None:
    """Audio chunks between the chunks of a video message, as encoders interleave them."""
    writer = ClientChunker()
    data = writer.write([Msg(2, chunks.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 100))])
    video = [Msg(6, chunks.VIDEO, 1, 33 * i, bytes([i]) * 450) for i in range(5)]
    audio = [Msg(4, chunks.AUDIO, 1, 21 * i, bytes([i]) * 9) for i in range(5)]
    for v, a in zip(video, audio, strict=True):
        video_chunks = writer.chunks_of(v)
        audio_chunks = writer.chunks_of(a)
        data += video_chunks[0] + audio_chunks[0] + b"".join(video_chunks[1:])
    got = read_all(data, list(range(1, len(data), 3)))
    assert [m for m in got if m.type_id == chunks.VIDEO] == video
    assert [m for m in got if m.type_id == chunks.AUDIO] == audio


def test_chunk_reader_timestamps_from_hand_written_headers() -> None:
    """fmt 0 absolute, fmt 1 and 2 deltas, fmt 3 repeating the last delta (or, after a fmt 0,
    the fmt 0 field, as ffmpeg and SRS read it), extended timestamps in fmt 0, 1 and 3."""
    def fmt0(csid: int, ts: int, length: int, type_id: int) -> bytes:
        return (bytes((csid,)) + ts.to_bytes(3, "big") + length.to_bytes(3, "big")
                + bytes((type_id, 1, 0, 0, 0)))

    def fmt1(csid: int, delta: int, length: int, type_id: int) -> bytes:
        return bytes((0x40 | csid,)) + delta.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes(
            (type_id,))

    ext = struct.pack(">I", 0x01000000)
    data = (
        fmt0(6, 1000, 2, 9) + b"v0"
        + fmt1(6, 33, 1, 9) + b"v"
        + b"\x86" + (34).to_bytes(3, "big") + b"v"  # fmt 2
        + b"\xc6" + b"v"  # fmt 3: +34
        + fmt0(4, 500, 1, 8) + b"a"
        + b"\xc4" + b"a"  # fmt 3 right after fmt 0: +500
        + fmt0(5, 0xFFFFFF, 130, 9) + ext + b"x" * 128
        + b"\xc5" + ext + b"yy"  # the continuation repeats the extension
        + fmt1(5, 0xFFFFFF, 1, 9) + ext + b"z"  # fmt 1 with an extended delta
    )
    got = [(m.csid, m.timestamp, m.payload) for m in read_all(data, [])]
    assert got == [
        (6, 1000, b"v0"), (6, 1033, b"v"), (6, 1067, b"v"), (6, 1101, b"v"),
        (4, 500, b"a"), (4, 1000, b"a"),
        (5, 0x01000000, b"x" * 128 + b"yy"), (5, 0x02000000, b"z"),
    ]
    assert read_all(data, list(range(1, len(data)))) == read_all(data, [])


def test_abort_discards_the_partial_message() -> None:
    writer = ClientChunker()
    video_chunks = writer.chunks_of(Msg(6, chunks.VIDEO, 1, 0, b"a" * 300))
    abort = writer.write([Msg(2, chunks.ABORT, 0, 0, struct.pack(">I", 6))])
    after = writer.write([Msg(6, chunks.VIDEO, 1, 40, b"b" * 10)])
    got = read_all(video_chunks[0] + abort + after, [])
    assert [(m.type_id, m.payload) for m in got] == [(chunks.ABORT, struct.pack(">I", 6)),
                                                     (chunks.VIDEO, b"b" * 10)]


def _header(csid: int, type_id: int, length: int) -> bytes:
    return bytes((csid,)) + bytes(3) + length.to_bytes(3, "big") + bytes((type_id,)) + bytes(4)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        # The length field has 24 bits: 16 MiB - 1 is the largest a client can declare.
        (_header(6, chunks.VIDEO, 0xFFFFFF), "a 16 MiB message"),
        (_header(6, chunks.VIDEO, (8 << 20) + 1), "a message one byte over 8 MiB"),
        (_header(3, chunks.COMMAND_AMF0, 65 << 10), "a command over 64 KiB"),
        (_header(2, chunks.SET_CHUNK_SIZE, 4) + struct.pack(">I", 0), "chunk size 0"),
        (_header(2, chunks.SET_CHUNK_SIZE, 4) + struct.pack(">I", 0x7FFFFFFF), "chunk size 2^31-1"),
        (_header(2, chunks.SET_CHUNK_SIZE, 4) + struct.pack(">I", 0x80000001), "high bit set"),
        (_header(2, chunks.SET_CHUNK_SIZE, 4) + struct.pack(">I", (1 << 20) + 1), "over the limit"),
        (_header(2, chunks.SET_CHUNK_SIZE, 2) + b"\0\1", "short Set Chunk Size"),
        (_header(2, chunks.USER_CONTROL, 5000), "a huge control message"),
        (b"\x86" + bytes(3), "fmt 2 on a new chunk stream"),
        (b"\xc6", "fmt 3 on a new chunk stream"),
        (_header(6, chunks.VIDEO, 300) + b"x" * 128 + _header(6, chunks.VIDEO, 5),
         "a new header in the middle of a message"),
    ],
)
def test_chunk_reader_refuses_hostile_headers(data: bytes, why: str) -> None:
    reader = chunks.ChunkReader()
    reader.feed(data)
    with pytest.raises(RtmpProtocolError):
        while reader.next_message() is not None:
            pass


def test_chunk_reader_bounds_chunk_streams_and_pending_bytes() -> None:
    limits = chunks.ChunkLimits(max_chunk_streams=4, max_pending_bytes=400)
    reader = chunks.ChunkReader(limits)
    reader.feed(b"".join(_header(c, chunks.AUDIO, 1) + b"a" for c in range(3, 7)))
    assert sum(1 for _ in iter(reader.next_message, None)) == 4
    reader.feed(_header(7, chunks.AUDIO, 1) + b"a")
    with pytest.raises(RtmpProtocolError, match="chunk streams"):
        reader.next_message()

    reader = chunks.ChunkReader(limits)  # partial messages on many streams add up
    reader.feed(b"".join(_header(c, chunks.VIDEO, 5000) + b"v" * 128 for c in range(3, 7)))
    with pytest.raises(RtmpProtocolError, match="unfinished"):
        while reader.next_message() is not None:
            pass


def test_writer_output_reads_back() -> None:
    """The server's own messages: fmt 0 then fmt 3 continuations, extended timestamps."""
    payload = bytes(range(256)) * 40
    data = (chunks.encode_message(3, chunks.COMMAND_AMF0, 0, 0, payload, 128)
            + chunks.encode_message(2, chunks.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 1000), 128)
            + chunks.encode_message(400, chunks.VIDEO, 1, 0x01234567, payload, 1000))
    got = [m for m in read_all(data, list(range(1, len(data), 97))) if m.csid != 2]
    assert [(m.csid, m.timestamp, m.payload) for m in got] == [
        (3, 0, payload), (400, 0x01234567, payload)]
