"""The launcher's application factory: wires the signaling side, the SFU and the pages."""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from sfu import metrics as sfu_metrics
from sfu import whip_whep
from sfu.event_bridge import EventBridge
from sfu.flv import http as flv_http
from sfu.flv import metrics as flv_metrics
from sfu.flv.manager import FLV_KEY, FlvManager
from sfu.media_clock import RoomMediaClocks
from sfu.media_control import LoadMeter, NodeMediaControl, SessionBridge
from sfu.node import NODE_KEY, SfuNode
from sfu.recording.manager import RECORDING_KEY, RecordingManager
from sfu.rtmp import metrics as rtmp_metrics
from sfu.rtmp.door import RTMP_KEY, RtmpDoor
from sfu.settings import FlvSettings, NodeSettings, RecordSettings, SnapshotSettings
from sfu.snapshots import SNAPSHOTS_KEY, RoomSnapshots
from sfu.ws_negotiator import NodeNegotiator
from shopcast.config import Config
from shopcast.control_plane import add_control_plane, metrics_lines
from signaling import pages, ws_signaling
from signaling.cors import CORS_KEY, CorsPolicy, cors_middleware
from signaling.door_refusals import REFUSALS_KEY, DoorRefusals, refusal_middleware
from signaling.errors import ApiError
from signaling.front_door import MAX_BODY_BYTES
from signaling.http_errors import error_middleware
from signaling.live.media_time import clock_sink
from signaling.recordings_index import RECORDINGS_KEY
from signaling.service import Signaling
from signaling.snapshots import snapshot_sink
from signaling.ws_signaling import WsSignaling

CONFIG_KEY = web.AppKey("config", Config)


def node_settings(config: Config) -> NodeSettings:
    return NodeSettings(
        ice_hosts=config.ice_hosts,
        ice_loopback=config.host in ("127.0.0.1", "localhost", "::1"),
        ice_public_ip=config.ice_public_ip,
        stun_url=config.stun_url,
        turn_url=config.turn_url,
        turn_username=config.turn_username,
        turn_password=config.turn_password,
        keyframe_throttle_ms=config.pli_throttle_ms,
        fast_start_ms=config.fast_start_ms,
        max_publishers=config.max_publishers,
        max_sessions_per_identity=config.max_sessions_per_identity,
        max_sessions_per_address=config.max_sessions_per_address,
        max_pending_per_identity=config.max_pending_per_identity,
        max_pending_sessions=config.max_pending_sessions,
        trusted_proxies=config.trusted_proxies,
        workers=worker_count(config.workers),
        log_level=config.log_level,
        rtmp_grace_ms=config.rtmp_grace_ms,
    )


def worker_count(setting: int) -> int:
    """-1 means one worker per core, and none on a single core (the main loop suffices)."""
    if setting >= 0:
        return setting
    cores = os.cpu_count() or 1
    return cores if cores > 1 else 0


def create_app(config: Config) -> web.Application:
    """``shopcast serve``: control plane, SFU and pages in one process."""
    app = base_app(config)
    signaling = add_control_plane(app, config)  # before the node: signaling starts first
    node = add_media_plane(app, config, signaling)
    signaling.attach_media(  # REST close/kick/mute act on media here; the playback plan asks it
        NodeMediaControl(node, app[FLV_KEY]),  # a kick also ends its FLV responses
        local_node=LoadMeter(node, signaling.settings.node_id, config.base_url,
                             config.webrtc_viewer_cap),
    )
    pages.add_routes(app, Path(config.web_dir))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


def base_app(config: Config) -> web.Application:
    app = web.Application(middlewares=[refusal_middleware, cors_middleware, error_middleware],
                          client_max_size=MAX_BODY_BYTES)
    app[CONFIG_KEY] = config
    app[REFUSALS_KEY] = DoorRefusals()  # what every door refuses, for /metrics
    app[CORS_KEY] = CorsPolicy(config.cors_origins)
    app[whip_whep.SECRET_KEY] = config.resolve_secret()
    return app


def add_media_plane(app: web.Application, config: Config, signaling: Signaling) -> SfuNode:
    """The SFU with its HTTP-FLV output and WHIP/WHEP/FLV routes; its sessions and tracks
    are reported to ``signaling``. Call after ``add_control_plane`` (stops before it)."""
    flv = FlvManager(FlvSettings(
        latency_budget_ms=config.flv_latency_budget_ms,
        stuck_timeout_ms=config.flv_stuck_timeout_ms,
        keyframe_period_ms=config.flv_keyframe_interval_ms,
        layout=config.flv_layout,
        plain_token=config.flv_plain_token,
    ))
    bridge = SessionBridge(signaling.reporter)
    recording = RecordingManager(
        flv, RecordSettings(config.record, config.record_dir, config.record_segment_s,
                            config.record_retention_days),
        app[RECORDINGS_KEY], signaling.bus, signaling.settings.node_id,
        finished=lambda meta: signaling.webhooks.emit("recording_finished",
                                                      recording=meta.public()),
    )
    node = SfuNode(
        node_settings(config),
        events=EventBridge(signaling.bus, signaling.live),  # the events data channels
        cohost_admission=signaling.live.cohosts.admits,  # co-hosts need an invitation
        banned=signaling.live.is_banned,  # WHIP, WHEP and FLV refuse a banned identity
        forbidden=signaling.live.forbids.refusal,  # ... and everyone in a forbidden room
        room_observers=[flv, recording, bridge],
        session_observers=[bridge],
    )
    app[NODE_KEY] = node
    app[FLV_KEY] = flv
    app[RECORDING_KEY] = recording
    snapshots = RoomSnapshots(  # compliance review: the newest keyframe of each live room
        flv, SnapshotSettings(config.snapshot_interval_s, config.snapshot_keep),
        snapshot_sink(signaling.store, signaling.webhooks,
                      round(config.snapshot_interval_s * config.snapshot_keep * 1000)))
    app[SNAPSHOTS_KEY] = snapshots
    media_clocks = RoomMediaClocks(flv, clock_sink(signaling.store))  # commerce events' clock

    rtmp = None
    if config.rtmp_port:
        placement = app.get(whip_whep.PLACEMENT_KEY)
        rtmp = RtmpDoor(node.publish_rtmp, config.resolve_secret(), host=config.host,
                        port=config.rtmp_port,
                        placement=placement.publish_here if placement is not None else None,
                        banned=signaling.live.is_banned,
                        forbidden=signaling.live.forbids.refusal)
        app[RTMP_KEY] = rtmp
        app[REFUSALS_KEY].add_source("rtmp", rtmp.refused)  # publishes refused, by code
        app[REFUSALS_KEY].add_source("rtmp", rtmp.server.refused)  # connections, timeouts...

    async def node_lifetime(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        await recording.start()
        await snapshots.start()
        await media_clocks.start()
        if rtmp is not None:
            await rtmp.start()
        yield
        if rtmp is not None:
            await rtmp.close()
        await media_clocks.close()
        await snapshots.close()
        await recording.close()  # the last fragments and the index, before the node stops
        await node.stop()

    app.cleanup_ctx.append(node_lifetime)
    whip_whep.add_routes(app)
    app.router.add_get("/live/{room}.flv", flv_http.play_flv)
    ws_signaling.add_routes(app, WsSignaling(
        NodeNegotiator(node, app.get(whip_whep.PLACEMENT_KEY)), config.ws_resume_s))
    return node


async def healthz(request: web.Request) -> web.Response:
    """``ok``; ``degraded`` with 503 when the node cannot take viewers (every worker is dead
    and not yet replaced), so a load balancer sends them elsewhere meanwhile."""
    node = request.app[NODE_KEY]
    body: dict[str, object] = {"status": "ok", "rooms": len(node.rooms),
                               "sessions": len(node.sessions)}
    pool = node.workers
    if pool is None:
        return web.json_response(body)
    body["workers"] = {"live": pool.live, "configured": pool.count}
    if pool.live == 0:
        body.update(status="degraded", reason="no_workers")
        return web.json_response(body, status=503, headers={"Retry-After": "1"})
    return web.json_response(body)


def require_metrics_token(request: web.Request) -> None:
    """``--metrics-token``: when set, ``/metrics`` of every process answers only
    ``Authorization: Bearer <that token>`` (``401`` JSON otherwise); unset, it is open."""
    expected = request.app[CONFIG_KEY].metrics_token
    if not expected:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             expected.encode()):
        raise ApiError(401, "metrics_unauthorized",
                       "GET /metrics needs Authorization: Bearer <the --metrics-token>")


async def metrics(request: web.Request) -> web.Response:
    require_metrics_token(request)
    lines = sfu_metrics.render(request.app[NODE_KEY]) + flv_metrics.render(request.app[FLV_KEY])
    lines += rtmp_metrics.render(request.app.get(RTMP_KEY), request.app[NODE_KEY])
    lines += request.app[REFUSALS_KEY].lines()
    lines += request.app[SNAPSHOTS_KEY].lines()
    lines += request.app[RECORDING_KEY].lines()
    lines += await metrics_lines(request.app)
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
