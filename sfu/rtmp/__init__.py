"""RTMP ingest: the protocol server and the media conversions that turn an encoder's FLV tags
into what the SFU forwards (H.264 RTP, Opus)."""
