"""HTTP-FLV: one FLV output per live room (remux, Opus->AAC, VP8->H.264), served to readers
with a GOP cache and a per-reader latency budget. See output.py and viewer_queue.py."""
