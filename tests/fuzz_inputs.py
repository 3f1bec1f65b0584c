"""Seeded random inputs for the door fuzz (tests/test_fuzz_doors.py): byte mutations, random
JSON/msgpack values, client events, REST bodies, SDP offers and RTMP message streams. Every
function takes the test's ``random.Random`` so a run is reproducible from its seed."""

from __future__ import annotations

import json
import random
from typing import Any

import msgpack
from aiortc import RTCPeerConnection

from sfu.rtmp import amf0, chunks
from signaling.negotiation import MAX_SDP_BYTES


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One of: truncation, bit flips, a random splice, invalid UTF-8, duplication."""
    if not data:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(len(data))]
    if kind == 1:
        out = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == 2:
        at = rng.randrange(len(data))
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 256)))
        return data[:at] + junk + data[at:]
    if kind == 3:
        at = rng.randrange(len(data))
        return data[:at] + rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]) + \
            data[at:]
    return data * rng.randint(2, 4)


def value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON/msgpack-able value: wrong types, huge numbers, deep nesting."""
    kind = rng.randrange(12 if depth < 6 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**53, 2**63 - 1, -(2**63), rng.randint(-9, 99)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e308, 1e-320, 3.14])
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randint(0, 40)))
    if kind == 5:
        return rng.choice(["", "x" * 20_000, "\u0000", "fz1", "../../etc", "*", "<script>"])
    if kind == 6:
        return rng.choice(["chat", "like", "gift", "purchase", "resume", "ping", "join"])
    if kind == 7:
        return rng.choice([[], {}, [1] * 100])
    if kind in (8, 9):
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(value(rng, 6)): value(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def deep(rng: random.Random) -> Any:
    nested: Any = rng.choice([1, "x", None])
    for _ in range(rng.choice([40, 200, 900])):
        nested = [nested] if rng.random() < 0.5 else {"a": nested}
    return nested


def event(rng: random.Random) -> Any:
    """A client event that often has a real type and wrong or extreme fields."""
    roll = rng.random()
    if roll < 0.1:
        return value(rng)
    if roll < 0.15:
        return deep(rng)
    data = {str(value(rng, 6)): value(rng, 3) for _ in range(rng.randint(0, 4))}
    data["type"] = value(rng, 6) if rng.random() < 0.8 else value(rng, 3)
    for key in rng.sample(["text", "count", "sku", "qty", "after_seq", "cid", "gift", "session",
                           "room", "sdp", "leg"], rng.randint(0, 4)):
        data[key] = value(rng, 3)
    return data


def packed(rng: random.Random) -> bytes:
    """msgpack of a random structure, sometimes mutated, sometimes raw bytes."""
    roll = rng.random()
    if roll < 0.15:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    try:
        raw: bytes = msgpack.packb(event(rng), use_bin_type=True)
    except (ValueError, OverflowError):  # too deep for msgpack's packer itself
        raw = b"\xdc\xff\xff" * 100
    return mutate(rng, raw) if roll < 0.4 else raw


def json_body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    if roll < 0.2:
        levels = rng.choice([40, 200, 5000])
        return b'{"a":' * levels + b"1" + b"}" * levels if rng.random() < 0.5 else \
            b"[" * levels + b"1" + b"]" * levels
    if roll < 0.3:
        return rng.choice([b"NaN", b'{"price": Infinity}', b'{"a": 1e999}', b"[" * 10_000,
                           b'{"sku": "a", "price": ' + b"9" * 5000 + b"}", b"\xff\xfe{}"])
    body = value(rng) if rng.random() < 0.3 else {
        k: value(rng, 3) for k in rng.sample(
            ["name", "sku", "title", "price", "currency", "stock", "per_user", "duration_s",
             "qty", "identity", "room", "grants", "ttl", "metadata", "text", "muted", "url",
             "max_viewers", "words", "minutes"], rng.randint(0, 6))}
    raw = json.dumps(body).encode()
    return mutate(rng, raw) if rng.random() < 0.3 else raw


def sdp_offer(rng: random.Random, base: str) -> bytes:
    """The real offer mutated: random lines, many m= sections up to the byte limit, bytes."""
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2000)))
    lines = base.split("\r\n")
    if roll < 0.35:
        section = rng.choice(["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                              "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                              "m=video 0 RTP/AVP 0", "m=text 1 x y", "m=" + "9" * 40])
        extra = [section, "a=mid:" + str(rng.randrange(10**6)), "a=sendrecv",
                 "a=rtpmap:96 H264/90000", "a=rtpmap:111 opus/48000/2"]
        lines.extend(extra * rng.randint(1, 400))
    elif roll < 0.6:
        for _ in range(rng.randint(1, 10)):
            at = rng.randrange(len(lines))
            lines[at] = rng.choice([
                "", "a=" + "x" * rng.randint(1, 3000), "m=", "c=IN IP4 999.1.1.1",
                "a=rtpmap:" + str(rng.choice([-1, 0, 96, 2**40])) + " H264/90000",
                "a=fmtp:96 profile-level-id=zzzzzz;packetization-mode=9",
                "a=candidate:1 1 udp 1 127.0.0.1 " + str(rng.choice([0, 70000, 9])) + " typ host",
                "a=fingerprint:sha-256 00", "a=ssrc:" + str(2**40) + " cname:x",
                "a=extmap:" + str(rng.choice([0, 15, 300])) + " urn:x", "a=setup:bogus",
                "a=ice-ufrag:", "a=mid:" + "m" * 300, "a=group:BUNDLE " + "0 " * 100])
    raw = "\r\n".join(lines).encode()
    if 0.6 <= roll:
        raw = mutate(rng, raw)
    return raw[:MAX_SDP_BYTES] if rng.random() < 0.9 else raw + b"a" * MAX_SDP_BYTES


async def real_offer(direction: str = "sendrecv") -> str:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video", direction=direction)
        pc.addTransceiver("audio", direction=direction)
        pc.createDataChannel("events")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def rtmp_messages(rng: random.Random, stream: str) -> bytes:
    """connect, createStream and publish with random or real arguments, then random messages
    (audio, video, data, control, commands) of random or mutated payloads, as chunks."""
    def message(type_id: int, payload: bytes, stream_id: int = 0) -> bytes:
        return chunks.encode_message(rng.choice([3, 4, 8, 2, 64, 320]), type_id, stream_id,
                                     rng.choice([0, 33, 2**24 - 1, 2**32 - 1]), payload,
                                     chunks.DEFAULT_CHUNK_SIZE)

    def command(*values: object, stream_id: int = 0) -> bytes:
        try:
            body = amf0.encode(*values)
        except (TypeError, ValueError, OverflowError):
            body = bytes(rng.getrandbits(8) for _ in range(40))
        return message(chunks.COMMAND_AMF0, mutate(rng, body) if rng.random() < 0.2 else body,
                       stream_id)

    app = {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"} if rng.random() < 0.7 else \
        {str(value(rng, 6)): rng.choice([1.0, "x", None, True]) for _ in range(3)}
    out = [command("connect", 1.0, app), command("createStream", 2.0, None),
           command("publish", 3.0, None, stream, "live", stream_id=1)]
    for _ in range(rng.randint(0, 40)):
        type_id = rng.choice([8, 9, 9, 18, 20, 1, 4, 5, 6, 17, rng.randrange(256)])
        if type_id == 9 and rng.random() < 0.7:  # an FLV video tag: AVC header or NALUs
            payload = rng.choice([b"\x17\x00", b"\x17\x01", b"\x27\x01", b"\x1c\x00"]) + \
                bytes(3) + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600)))
        elif type_id == 8 and rng.random() < 0.7:  # an FLV audio tag: AAC config or frame
            payload = rng.choice([b"\xaf\x00", b"\xaf\x01", b"\x2f\x01"]) + \
                bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        else:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        out.append(message(type_id, payload, rng.choice([0, 1, 1, 7])))
    return b"".join(out)
