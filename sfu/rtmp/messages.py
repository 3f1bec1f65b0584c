"""The messages the server sends, already chunked, and the reading of a publish's names.

Chunk stream ids follow what clients expect from FMS/SRS: 2 for protocol control, 3 for
NetConnection replies, 5 for NetStream status on the published stream.
"""

from __future__ import annotations

import struct
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from sfu.rtmp import amf0, chunks

CSID_CONTROL: Final = 2
CSID_COMMAND: Final = 3
CSID_STATUS: Final = 5
PUBLISH_STREAM_ID: Final = 1

# user control events
STREAM_BEGIN: Final = 0
PING_REQUEST: Final = 6
PING_RESPONSE: Final = 7

_U32 = struct.Struct(">I")


def control(type_id: int, payload: bytes) -> bytes:
    """A protocol control message (types 1-6): chunk stream 2, message stream 0."""
    return chunks.encode_message(CSID_CONTROL, type_id, 0, 0, payload, chunks.DEFAULT_CHUNK_SIZE)


def set_chunk_size(size: int) -> bytes:
    return control(chunks.SET_CHUNK_SIZE, _U32.pack(size))


def window_ack_size(size: int) -> bytes:
    return control(chunks.WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int) -> bytes:
    return control(chunks.SET_PEER_BANDWIDTH, _U32.pack(size) + b"\x02")  # 2 = dynamic


def acknowledgement(received: int) -> bytes:
    return control(chunks.ACKNOWLEDGEMENT, _U32.pack(received & 0xFFFFFFFF))


def user_control(event: int, value: int) -> bytes:
    return control(chunks.USER_CONTROL, struct.pack(">HI", event, value & 0xFFFFFFFF))


def command(chunk_size: int, *values: object, stream_id: int = 0) -> bytes:
    """An AMF0 command (type 20); NetStream ones go on chunk stream 5."""
    csid = CSID_STATUS if stream_id else CSID_COMMAND
    return chunks.encode_message(csid, chunks.COMMAND_AMF0, stream_id, 0, amf0.encode(*values),
                                 chunk_size)


def connect_result(chunk_size: int, transaction: float) -> bytes:
    return command(
        chunk_size, "_result", transaction,
        {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
        {"level": "status", "code": "NetConnection.Connect.Success",
         "description": "Connection succeeded.", "objectEncoding": 0.0},
    )


def status(chunk_size: int, level: str, code: str, description: str,
           stream_id: int = PUBLISH_STREAM_ID) -> bytes:
    """``onStatus`` on a NetStream: how a publish is started, refused or ended."""
    return command(chunk_size, "onStatus", 0.0, None,
                   {"level": level, "code": code, "description": description},
                   stream_id=stream_id)


def split_query(value: str) -> tuple[str, dict[str, str]]:
    """("room1", {"token": "abc"}) from "room1?token=abc"; the last of a repeated key wins."""
    name, sep, query = value.partition("?")
    if not sep:
        return value, {}
    return name, dict(parse_qsl(query, keep_blank_values=True))


def names(app_field: str, tc_url: str, stream_field: str) -> tuple[str, str, dict[str, str]]:
    """(app, stream, query) of a publish: the stream's query wins over tcUrl's and app's."""
    app, query = split_query(app_field.strip("/"))
    try:
        merged = dict(parse_qsl(urlsplit(tc_url).query, keep_blank_values=True))
    except ValueError:  # a tcUrl that is no URL: it carries no query then
        merged = {}
    merged.update(query)
    stream, stream_query = split_query(stream_field)
    merged.update(stream_query)
    return app.strip("/"), stream, merged
