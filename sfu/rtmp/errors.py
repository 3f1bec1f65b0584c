"""Errors of the RTMP protocol layer, as media-plane domain errors with a stable code.

Any of these closes the one connection that caused it (the server logs the reason); the door
never maps them to anything the client sees, since a peer that breaks the protocol gets no
answer worth reading.
"""

from __future__ import annotations

from sfu.errors import MediaError


class RtmpProtocolError(MediaError):
    """The peer broke the RTMP protocol or one of our limits: its connection is closed."""

    code = "rtmp_protocol_error"


class AmfError(RtmpProtocolError):
    """An AMF0 value that cannot be read (truncated, unknown marker, too deep) or written."""

    code = "rtmp_bad_amf"
