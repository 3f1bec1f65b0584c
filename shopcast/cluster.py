"""The two processes of a multi-node deployment, both on one Redis.

``shopcast signaling`` (``create_signaling_app``): REST API, pages, metrics and the front door.
It has no media: WHIP/WHEP requests are forwarded to the node that owns the room (one HTTP
client for the app's life), FLV answers ``307`` there, and REST close/kick/mute go to the nodes
as bus commands. Each one also frees the rooms of nodes that stopped heartbeating.

``shopcast sfu`` (``create_sfu_app``): one media node. It registers in Redis with its load
every second (dead 4.5 s after its last heartbeat), serves WHIP/WHEP/FLV for the rooms assigned
to it (redirecting the others), reports its sessions, applies media commands and obeys drain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from sfu import whip_whep
from sfu.flv.manager import FLV_KEY
from sfu.media_control import LoadMeter, NodeMediaControl
from shopcast.app import add_media_plane, base_app, healthz, metrics, require_metrics_token
from shopcast.config import Config
from shopcast.control_plane import add_control_plane, metrics_lines
from signaling import pages, ws_signaling
from signaling.door_refusals import REFUSALS_KEY
from signaling.front_door import FORWARDER_KEY, add_front_door
from signaling.nodes import NodeAgent
from signaling.remote_media import BusMediaControl, MediaCommands
from signaling.routing import FrontDoorNegotiator, NodePlacement, NodeReaper, RoomPlacement
from signaling.ws_signaling import WsSignaling


def create_signaling_app(config: Config) -> web.Application:
    app = base_app(config)
    signaling = add_control_plane(app, config)
    signaling.attach_media(BusMediaControl(signaling.bus))  # close/kick/mute: to the nodes
    placement = RoomPlacement(signaling.store, signaling.rooms)
    forwarder = add_front_door(app, placement, signaling.settings.secret,
                               plain_flv_token=config.flv_plain_token)
    ws_signaling.add_routes(app, WsSignaling(FrontDoorNegotiator(placement), config.ws_resume_s))
    reaper = NodeReaper(placement)

    async def front_door_lifetime(app: web.Application) -> AsyncIterator[None]:
        await forwarder.start()
        await reaper.start()
        yield
        await reaper.close()
        await forwarder.close()

    app.cleanup_ctx.append(front_door_lifetime)
    pages.add_routes(app, Path(config.web_dir))
    app.router.add_get("/healthz", signaling_healthz)
    app.router.add_get("/metrics", signaling_metrics)
    return app


def create_sfu_app(config: Config) -> web.Application:
    app = base_app(config)
    signaling = add_control_plane(app, config, rest=False)
    node_id = signaling.settings.node_id
    placement = RoomPlacement(signaling.store, signaling.rooms)
    app[whip_whep.PLACEMENT_KEY] = NodePlacement(placement, node_id)  # before the media plane
    node = add_media_plane(app, config, signaling)
    commands = MediaCommands(signaling.bus, NodeMediaControl(node, app[FLV_KEY]))
    agent = NodeAgent(
        signaling.store, LoadMeter(node, node_id, config.base_url, config.webrtc_viewer_cap),
        bus=signaling.bus,
    )

    async def membership(app: web.Application) -> AsyncIterator[None]:
        """After the node is up: take commands, then register. Before it stops: deregister
        (its rooms are free at once), then stop taking commands."""
        await commands.start()
        await agent.start()
        yield
        await agent.close()
        await commands.close()

    app.cleanup_ctx.append(membership)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def signaling_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "role": "signaling"})


async def signaling_metrics(request: web.Request) -> web.Response:
    require_metrics_token(request)
    lines = await metrics_lines(request.app) + request.app[FORWARDER_KEY].metric_lines()
    lines += request.app[REFUSALS_KEY].lines()
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")
