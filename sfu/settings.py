"""What the media plane needs from the configuration (built by the launcher from Config).

Every media default is declared here, once: ``shopcast/config.py`` takes its flags' defaults
from these classes, and the objects built from them (publishers, producers, FLV outputs) take
the values as constructor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from signaling.live.schema import LAYOUTS

KEYFRAME_THROTTLE_MS = 500
"""Minimum gap between two keyframe requests (PLI/FIR) to a publisher, per track; a request
inside the gap is deferred to its end, not dropped."""

FAST_START_MS = 1000
"""A joining viewer starts from the newest keyframe when it is at most this old (0: never)."""

RTMP_PORT = 1935
"""RTMP ingest port (0: no RTMP door)."""

RTMP_GRACE_MS = 5000
"""An RTMP encoder whose connection drops keeps its session (and its viewers) this long: a
re-publish in time continues the tracks."""

MAX_SESSIONS_PER_IDENTITY = 8
"""WebRTC sessions one identity may hold in one room on a node (a page, a reload, a second tab)."""

MAX_SESSIONS_PER_ADDRESS = 64
"""WebRTC sessions one client address may hold on a node (a household or office behind a NAT)."""

MAX_PENDING_PER_IDENTITY = 4
"""Sessions of one identity answered but not yet ICE-connected: an offer costs sockets and CPU
before any media flows, so unconnected ones are few."""

MAX_PENDING_SESSIONS = 200
"""Answered, not yet ICE-connected sessions on a node, all identities together."""

ADMISSION_RETRY_AFTER_S = 5
"""``Retry-After`` of a session refused by those limits: about one ICE connect's time."""

TRUSTED_PROXIES = ("127.0.0.1", "::1")
"""Peers whose ``X-Forwarded-For`` names the client (the per-address limit counts that): a
front door (``shopcast signaling``) or reverse proxy on this host. Anyone else's is ignored."""


@dataclass
class NodeSettings:
    """What the media plane needs from the configuration."""

    ice_hosts: list[str] = field(default_factory=list)
    ice_loopback: bool = False
    ice_public_ip: str = ""
    stun_url: str = ""
    turn_url: str = ""
    turn_username: str = ""
    turn_password: str = ""
    keyframe_throttle_ms: int = KEYFRAME_THROTTLE_MS
    fast_start_ms: int = FAST_START_MS
    max_publishers: int = 4
    workers: int = 0
    log_level: str = "INFO"
    rtmp_grace_ms: int = RTMP_GRACE_MS
    max_sessions_per_identity: int = MAX_SESSIONS_PER_IDENTITY
    max_sessions_per_address: int = MAX_SESSIONS_PER_ADDRESS
    max_pending_per_identity: int = MAX_PENDING_PER_IDENTITY
    max_pending_sessions: int = MAX_PENDING_SESSIONS
    trusted_proxies: list[str] = field(default_factory=lambda: list(TRUSTED_PROXIES))


@dataclass
class FlvSettings:
    """What the FLV output needs from the configuration."""

    latency_budget_ms: int = 1500
    stuck_timeout_ms: int = 10_000
    keyframe_period_ms: int = 2000
    """Ask the anchor for a keyframe this often, to keep the GOP cache fresh (0: never); also
    the GOP length of the H.264 the output encodes itself (VP8 anchors, the co-host mix)."""
    flush_interval_ms: int = 50
    send_buffer_bytes: int = 65536
    layout: str = LAYOUTS[0]  # the co-host mix: one of LAYOUTS
    plain_token: bool = False
    """Accept a long-lived token in ``?token=`` (else only playback-plan tickets and Bearer)."""


@dataclass
class RecordSettings:
    """Recording (``sfu/recording/``): which rooms, where, how files are cut and kept."""

    enabled: bool = False  # every room (a room's own choice in the store wins)
    directory: str = "recordings"
    segment_s: float = 600.0  # a new file at the first keyframe past this
    retention_days: float = 7.0  # 0: keep everything


@dataclass
class SnapshotSettings:
    """Compliance snapshots (``sfu/snapshots.py``): how often, how many kept, JPEG quality."""

    interval_s: float = 10.0  # 0: no snapshots
    keep: int = 5  # per room, in memory
    quality: int = 5  # JPEG qscale, 2 (best) .. 31
