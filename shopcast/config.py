"""The one place for configuration: defaults, environment variables and CLI flags.

Every setting has a field here, an environment variable ``SHOPCAST_<NAME>`` and a CLI flag
``--<name>``; a flag beats the environment, which beats the default. The README lists them all.
The media plane's defaults are declared once, in ``sfu/settings.py``, and read from there.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sfu.settings import RTMP_PORT, FlvSettings, NodeSettings, RecordSettings, SnapshotSettings
from signaling.live.likes import RATE as LIKE_RATE
from signaling.live.resume import ResumeLimits
from signaling.live.schema import LAYOUTS

ENV_PREFIX = "SHOPCAST_"
# RFC 7518 3.2: an HS256 key is at least as long as the hash output (256 bits). A generated
# key (token_urlsafe(32)) has 43 characters.
MIN_SECRET_BYTES = 32
_NODE = NodeSettings()  # the media plane's defaults
_FLV = FlvSettings()
_RECORD = RecordSettings()
_SNAPSHOT = SnapshotSettings()
_RESUME = ResumeLimits()  # the event gateway's defaults


@dataclass
class Config:
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP listen address"})
    port: int = field(default=8080, metadata={"help": "HTTP listen port"})
    public_url: str = field(
        default="", metadata={"help": "base URL printed for pages (default http://host:port)"}
    )
    secret: str = field(
        default="",
        metadata={"help": "HS256 token key (default: generated once into secret_file)"},
    )
    secret_file: str = field(
        default=str(Path.home() / ".config" / "shopcast" / "secret"),
        metadata={"help": "where the generated token key is kept when no secret is given"},
    )
    redis: str = field(
        default="",
        metadata={"help": "Redis URL: redis://, rediss://, unix:// or "
                  "redis+sentinel://host:26379,host2:26379/service (empty: in-memory backend)"},
    )
    redis_prefix: str = field(
        default="shopcast", metadata={"help": "prefix of every Redis key and channel"}
    )
    allow_volatile_redis: bool = field(
        default=False,
        metadata={"help": "start on a Redis with neither appendonly nor save on (refused "
                          "otherwise: a restart would lose every order and sale)"},
    )
    event_history: int = field(
        default=1000, metadata={"help": "room events kept per room for clients that reconnect"}
    )
    node_id: str = field(
        default="", metadata={"help": "this process's id in the node registry (default: random)"}
    )
    webhook_urls: list[str] = field(
        default_factory=list, metadata={"help": "URLs that receive webhooks (POST, JSON)"}
    )
    webhook_secret: str = field(
        default="",
        metadata={"help": "HMAC-SHA256 key of the X-ShopCast-Signature header (default: derived "
                          "one-way from secret, never the token key itself)"},
    )
    webhook_attempts: int = field(
        default=5, metadata={"help": "deliveries tried per webhook before giving up"}
    )
    webhook_queue_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata={"help": "bytes of webhook bodies queued per URL; past it the oldest are "
                          "dropped and counted"},
    )
    http_header_timeout_ms: int = field(
        default=10_000,
        metadata={"help": "an HTTP connection that has not sent a whole request line and headers "
                          "this long after it opened (or after its last response) is closed"},
    )
    cors_origins: list[str] = field(
        default_factory=lambda: ["*"],
        metadata={"help": "origins whose pages may call WHIP/WHEP/REST/FLV from a browser "
                          "(* = any)"},
    )
    ice_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "host addresses to gather ICE candidates on (default: all but loopback)"},
    )
    ice_public_ip: str = field(
        default="", metadata={"help": "public IP announced instead of host addresses (1:1 NAT)"}
    )
    stun_url: str = field(default="", metadata={"help": "STUN server, e.g. stun:host:3478"})
    turn_url: str = field(default="", metadata={"help": "TURN server, e.g. turn:host:3478"})
    turn_username: str = field(default="", metadata={"help": "TURN username"})
    turn_password: str = field(default="", metadata={"help": "TURN password"})
    pli_throttle_ms: int = field(
        default=_NODE.keyframe_throttle_ms,
        metadata={"help": "minimum gap between keyframe requests per track"},
    )
    fast_start_ms: int = field(
        default=_NODE.fast_start_ms,
        metadata={"help": "a joining WebRTC viewer starts from the newest keyframe when it is "
                          "at most this old, without waiting for a new one (0: never)"},
    )
    max_publishers: int = field(
        default=_NODE.max_publishers,
        metadata={"help": "publishers per room: the anchor plus co-hosts"},
    )
    max_sessions_per_identity: int = field(
        default=_NODE.max_sessions_per_identity,
        metadata={"help": "WebRTC sessions one identity may hold in one room on a node "
                          "(429 past it)"},
    )
    max_sessions_per_address: int = field(
        default=_NODE.max_sessions_per_address,
        metadata={"help": "WebRTC sessions one client address may hold on a node (429 past it)"},
    )
    max_pending_per_identity: int = field(
        default=_NODE.max_pending_per_identity,
        metadata={"help": "WebRTC sessions of one identity answered but not yet connected "
                          "(429 past it)"},
    )
    max_pending_sessions: int = field(
        default=_NODE.max_pending_sessions,
        metadata={"help": "WebRTC sessions of a node answered but not yet connected (429 past "
                          "it)"},
    )
    trusted_proxies: list[str] = field(
        default_factory=lambda: list(_NODE.trusted_proxies),
        metadata={"help": "addresses of front doors / reverse proxies whose X-Forwarded-For "
                          "names the client for the per-address session limit"},
    )
    workers: int = field(
        default=-1,
        metadata={"help": "viewer worker processes: -1 = one per core (0 on one core), 0 = none"},
    )
    flv_latency_budget_ms: int = field(
        default=_FLV.latency_budget_ms,
        metadata={"help": "HTTP-FLV: a reader further behind skips to the newest keyframe"},
    )
    flv_stuck_timeout_ms: int = field(
        default=_FLV.stuck_timeout_ms,
        metadata={"help": "HTTP-FLV: drop a reader whose socket has not drained for this long"},
    )
    flv_keyframe_interval_ms: int = field(
        default=_FLV.keyframe_period_ms,
        metadata={"help": "HTTP-FLV: ask the anchor for a keyframe this often (0: never)"},
    )
    flv_plain_token: bool = field(
        default=_FLV.plain_token,
        metadata={"help": "HTTP-FLV: also accept a token in ?token= (off: only the playback "
                          "plan's short-lived ?ticket= URLs, or Authorization: Bearer)"},
    )
    rtmp_port: int = field(
        default=RTMP_PORT,
        metadata={"help": "RTMP ingest port, rtmp://HOST:PORT/live/{room}?token=... (0: off)"},
    )
    rtmp_grace_ms: int = field(
        default=_NODE.rtmp_grace_ms,
        metadata={"help": "RTMP: an encoder that drops keeps its session this long; a "
                          "re-publish in time continues the stream for its viewers"},
    )
    ws_resume_s: int = field(
        default=15,
        metadata={"help": "WebSocket signaling: how long a dropped socket's media legs wait "
                          "for the page to resume"},
    )
    resume_burst: int = field(
        default=_RESUME.burst,
        metadata={"help": "event resumes one connection may ask at once (then one per "
                          "resume_interval_ms; past it error resume_limited)"},
    )
    resume_interval_ms: int = field(
        default=round(1000 / _RESUME.per_s),
        metadata={"help": "one more event resume per connection this often"},
    )
    resume_max_events: int = field(
        default=_RESUME.max_events,
        metadata={"help": "events one resume re-sends at most (else a fresh state)"},
    )
    resume_max_bytes: int = field(
        default=_RESUME.max_bytes,
        metadata={"help": "bytes one resume re-sends at most (else a fresh state)"},
    )
    like_rate: int = field(
        default=LIKE_RATE,
        metadata={"help": "like taps one identity may send per second in a room (bursts of "
                          "100; past it error rate_limited; 0 = no limit)"},
    )
    timeline_chat: bool = field(
        default=False,
        metadata={"help": "the product timeline keeps chat too, so replays show it"},
    )
    flv_layout: str = field(
        default=_FLV.layout,
        metadata={"help": "HTTP-FLV with co-hosts: side_by_side or pip (picture-in-picture)"},
    )
    webrtc_viewer_cap: int = field(
        default=500,
        metadata={"help": "WebRTC viewers a node takes before the playback plan answers "
                  "HTTP-FLV and no new room is placed there (0: no cap)"},
    )
    log_level: str = field(
        default=_NODE.log_level, metadata={"help": "DEBUG, INFO, WARNING or ERROR"}
    )
    log_json: bool = field(default=False, metadata={"help": "log one JSON object per line"})
    metrics_token: str = field(
        default="",
        metadata={"help": "when set, GET /metrics needs Authorization: Bearer <this> "
                          "(empty: open)"},
    )
    record: bool = field(
        default=_RECORD.enabled,
        metadata={"help": "record every room (a room's own PUT /rooms/{room}/recording wins)"},
    )
    record_dir: str = field(
        default=_RECORD.directory,
        metadata={"help": "directory of the recordings (shared by every process that serves "
                          "them, on a multi-node deployment)"},
    )
    record_segment_s: int = field(
        default=round(_RECORD.segment_s),
        metadata={"help": "recordings: a new segment file at the first keyframe past this"},
    )
    record_retention_days: int = field(
        default=round(_RECORD.retention_days),
        metadata={"help": "recordings older than this are deleted (0: keep everything)"},
    )
    snapshot_interval_s: int = field(
        default=round(_SNAPSHOT.interval_s),
        metadata={"help": "compliance review: a JPEG of each live room's newest keyframe this "
                          "often, to GET /rooms/{room}/snapshot and the snapshot webhook (0: off)"},
    )
    snapshot_keep: int = field(
        default=_SNAPSHOT.keep,
        metadata={"help": "snapshots kept per room in the node's memory"},
    )
    web_dir: str = field(
        default=str(Path(__file__).resolve().parent.parent / "web"),
        metadata={"help": "directory of the browser pages"},
    )

    def resolve_secret(self) -> str:
        """The token key: given, or generated once and kept so `shopcast token` agrees.
        A key shorter than ``MIN_SECRET_BYTES`` stops the process (SystemExit)."""
        if self.secret:
            return _long_enough(self.secret, "--secret (SHOPCAST_SECRET)")
        path = Path(self.secret_file)
        if path.exists():
            self.secret = _long_enough(path.read_text().strip(), f"the key in {path}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.secret = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never world-readable
            with os.fdopen(fd, "w") as out:
                out.write(self.secret + "\n")
        return self.secret

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"


def _long_enough(secret: str, where: str) -> str:
    """``secret``, or a one-line SystemExit: a short HS256 key can be brute-forced offline."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise SystemExit(
            f"{where} is {size} bytes; the token key needs at least {MIN_SECRET_BYTES} "
            "(make one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return secret


def _parse(kind: object, raw: str) -> Any:
    if kind in (bool, "bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, "int"):
        return int(raw)
    if str(kind).startswith("list"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per Config field; values default to None so the env can fill in."""
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} [env {ENV_PREFIX}{f.name.upper()}]"
        if f.type in ("bool", bool):
            parser.add_argument(
                flag, dest=f.name, action="store_true", default=None, help=help_text
            )
        elif str(f.type).startswith("list"):
            parser.add_argument(
                flag, dest=f.name, action="append", default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=help_text)


def load(args: argparse.Namespace | None = None, env: dict[str, str] | None = None) -> Config:
    """Build a Config from defaults, then the environment, then parsed CLI flags."""
    env = dict(os.environ) if env is None else env
    config = Config()
    for f in fields(Config):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            setattr(config, f.name, _parse(f.type, raw))
        value = getattr(args, f.name, None) if args is not None else None
        if value is None:
            continue
        if str(f.type).startswith("list"):
            value = [item.strip() for v in value for item in v.split(",") if item.strip()]
        elif not isinstance(value, bool):
            value = _parse(f.type, value)
        setattr(config, f.name, value)
    if config.flv_layout not in LAYOUTS:
        raise SystemExit(f"--flv-layout must be one of {', '.join(LAYOUTS)}, "
                         f"not {config.flv_layout!r}")
    if config.snapshot_interval_s < 0 or config.snapshot_keep < 1:
        raise SystemExit("--snapshot-interval-s must be 0 (off) or more and --snapshot-keep "
                         "at least 1")
    if config.webhook_secret and config.webhook_secret == config.secret:
        raise SystemExit("--webhook-secret must differ from --secret: whoever verifies "
                         "webhooks could otherwise mint tokens")
    return config
