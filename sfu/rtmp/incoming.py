"""Reading a publisher's data messages (``onMetaData``) and aggregate messages.

An aggregate message (type 22) is a run of FLV tags in one message, which some encoders and
relays use to save headers; its sub-messages get the aggregate's timestamp plus their offset
from the first one, as FMS and SRS do.
"""

from __future__ import annotations

from collections.abc import Callable

from sfu.rtmp import chunks
from sfu.rtmp.contract import StreamSink
from sfu.rtmp.errors import RtmpProtocolError

_TAG_HEADER = 11
_BACK_POINTER = 4


def metadata_of(values: list[object]) -> dict[str, object] | None:
    """The metadata of ``@setDataFrame("onMetaData", {...})`` or ``onMetaData({...})``."""
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        return dict(values[1])
    return None


def dispatch_aggregate(message: chunks.Message, sink: StreamSink,
                       on_data: Callable[[bytes], None]) -> None:
    """Hand each FLV tag of an aggregate message to the sink (video, audio) or ``on_data``."""
    body = message.payload
    pos = 0
    first_ts: int | None = None
    while pos < len(body):
        if pos + _TAG_HEADER > len(body):
            raise RtmpProtocolError("truncated aggregate message")
        tag_type = body[pos]
        size = int.from_bytes(body[pos + 1:pos + 4], "big")
        ts = int.from_bytes(body[pos + 4:pos + 7], "big") | (body[pos + 7] << 24)
        start = pos + _TAG_HEADER
        end = start + size
        if end > len(body):
            raise RtmpProtocolError("aggregate sub-message longer than its message")
        if first_ts is None:
            first_ts = ts
        timestamp = message.timestamp + ts - first_ts
        payload = body[start:end]
        if tag_type == chunks.VIDEO:
            sink.on_video(timestamp, payload)
        elif tag_type == chunks.AUDIO:
            sink.on_audio(timestamp, payload)
        elif tag_type == chunks.DATA_AMF0:
            on_data(payload)
        pos = end + _BACK_POINTER
