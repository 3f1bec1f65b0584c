"""Wires the control plane (signaling/) into the app: settings from Config, lifetime, routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from shopcast.config import Config
from signaling import api
from signaling import metrics as signaling_metrics
from signaling.errors import StoreUnavailable
from signaling.live import websocket as live_websocket
from signaling.live.resume import ResumeLimits
from signaling.recordings_index import RECORDINGS_KEY, RecordingsIndex
from signaling.service import SIGNALING_KEY, Signaling, SignalingSettings
from signaling.store.durability import DataLossWatch, VolatileRedis, require_persistence
from signaling.webhooks import WebhookSettings

DATA_LOSS_KEY = web.AppKey("data_loss", DataLossWatch)


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
        timeline_chat=config.timeline_chat,
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
    watch = app[DATA_LOSS_KEY] = DataLossWatch(signaling.store)
    watch.on_loss(signaling.reporter.restore)  # Redis lost them: this process's sessions again
    signaling.reporter.claims_rooms = not rest  # a multi-node SFU node owns its rooms

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await signaling.start()
        await require_durable_redis(signaling, config)
        await watch.start()
        yield
        await watch.close()
        await signaling.close()

    app.cleanup_ctx.append(lifetime)
    if not rest:
        return signaling
    api.add_routes(app)
    live_websocket.add_routes(app)  # /ws/events/{room}: room events for FLV viewers
    return signaling


async def require_durable_redis(signaling: Signaling, config: Config) -> None:
    """Orders live in Redis: refuse one that persists nothing, unless allowed (see
    ``signaling/store/durability.py``). The memory backend is one process's, by choice."""
    from signaling.store.redis import RedisStore

    if not isinstance(signaling.store, RedisStore):
        return
    try:
        await require_persistence(signaling.store, allow_volatile=config.allow_volatile_redis)
    except VolatileRedis:
        await signaling.close()
        raise


async def metrics_lines(app: web.Application) -> list[str]:
    """The control plane's lines. With Redis away the store's own figures are left out (they
    cannot be read), and what says so is still there."""
    lines = store_lines(app)
    with contextlib.suppress(StoreUnavailable):
        lines += await signaling_metrics.render(app[SIGNALING_KEY])
    return lines


def store_lines(app: web.Application) -> list[str]:
    """Redis outages and data losses seen by this process (none with the memory backend)."""
    outage = getattr(app[SIGNALING_KEY].store, "outage", None)
    down, outages, refused = (0, 0, 0) if outage is None else (
        int(outage.down), outage.outages, outage.refused)
    return [
        "# HELP shopcast_store_up Whether this process's last store call was answered (0 "
        "during a Redis outage).", "# TYPE shopcast_store_up gauge",
        f"shopcast_store_up {1 - down}",
        "# HELP shopcast_store_outages_total Redis outages this process met.",
        "# TYPE shopcast_store_outages_total counter", f"shopcast_store_outages_total {outages}",
        "# HELP shopcast_store_refused_total Store calls refused with store_unavailable "
        "(503) during outages.", "# TYPE shopcast_store_refused_total counter",
        f"shopcast_store_refused_total {refused}",
        "# HELP shopcast_store_data_losses_total Times Redis lost its data and this process "
        "recorded its rooms and sessions again.",
        "# TYPE shopcast_store_data_losses_total counter",
        f"shopcast_store_data_losses_total {app[DATA_LOSS_KEY].losses}",
    ]
