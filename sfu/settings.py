"""What the media plane needs from the configuration (built by the launcher from Config)."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    keyframe_interval_ms: int = 500
    fast_start_ms: int = 1000
    max_publishers: int = 4
    workers: int = 0
    log_level: str = "INFO"
