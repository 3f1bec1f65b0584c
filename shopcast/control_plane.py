"""Wires the control plane (signaling/) into the app: settings from Config, lifetime, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from shopcast.config import Config
from signaling import api
from signaling import metrics as signaling_metrics
from signaling.live import websocket as live_websocket
from signaling.live.resume import ResumeLimits
from signaling.recordings_index import RECORDINGS_KEY, RecordingsIndex
from signaling.service import SIGNALING_KEY, Signaling, SignalingSettings
from signaling.webhooks import WebhookSettings


def signaling_settings(config: Config) -> SignalingSettings:
    settings = SignalingSettings(
        secret=config.resolve_secret(),
        redis_url=config.redis,
        redis_prefix=config.redis_prefix,
        event_history=config.event_history,
        layout=config.flv_layout,
        resume=ResumeLimits(burst=config.resume_burst,
                            per_s=1000 / max(1, config.resume_interval_ms),
                            max_events=config.resume_max_events,
                            max_bytes=config.resume_max_bytes),
        like_rate=config.like_rate,
        webhooks=WebhookSettings(
            urls=list(config.webhook_urls),
            secret=config.webhook_secret,
            attempts=config.webhook_attempts,
            queue_bytes=config.webhook_queue_bytes,
        ),
    )
    if config.node_id:
        settings.node_id = config.node_id
    return settings


def add_control_plane(app: web.Application, config: Config, *, rest: bool = True) -> Signaling:
    """Build the Signaling services, tie their lifetime to the app's and mount /api/v1.

    Call this before adding the SFU's cleanup context, so signaling starts first and stops
    last (sessions the SFU ends at shutdown are still reported). An SFU node of a multi-node
    deployment passes ``rest=False``: it reports sessions but serves no API."""
    signaling = Signaling(signaling_settings(config))
    app[SIGNALING_KEY] = signaling
    app[RECORDINGS_KEY] = RecordingsIndex(signaling.store, Path(config.record_dir))

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await signaling.start()
        yield
        await signaling.close()

    app.cleanup_ctx.append(lifetime)
    if not rest:
        return signaling
    api.add_routes(app)
    live_websocket.add_routes(app)  # /ws/events/{room}: room events for FLV viewers
    return signaling


async def metrics_lines(app: web.Application) -> list[str]:
    return await signaling_metrics.render(app[SIGNALING_KEY])
