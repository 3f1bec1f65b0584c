"""``shopcast`` command line: ``serve`` (single node), ``signaling`` and ``sfu`` (multi-node,
on one Redis) and ``token``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from urllib.parse import urlsplit

from aiohttp import web

from sfu import aiortc_private
from shopcast import config as config_module
from shopcast import logs
from shopcast.app import create_app
from shopcast.cluster import create_sfu_app, create_signaling_app
from signaling.service import SIGNALING_KEY
from signaling.tokens import Grant, mint

logger = logging.getLogger("shopcast")

DEMO_ROOM = "demo"
DEMO_TTL = 24 * 3600
ROLES = {
    "signaling": "multi-node: REST API, pages and routing (307 to the room's node); no media",
    "sfu": "multi-node: one media node (WHIP/WHEP/FLV for the rooms assigned to it)",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shopcast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run signaling, SFU and pages in one process")
    config_module.add_arguments(serve)
    serve.add_argument("--demo-room", default=DEMO_ROOM, help="room for the printed page URLs")

    for role, text in ROLES.items():
        config_module.add_arguments(sub.add_parser(role, help=text))

    token = sub.add_parser("token", help="print a signed access token")
    token.add_argument("--room", required=True, help="room name, or * for every room (admin)")
    token.add_argument("--identity", required=True, help="participant identity (token sub)")
    token.add_argument("--name", default="", help="display name")
    token.add_argument(
        "--grant", action="append", required=True, choices=[g.value for g in Grant],
        help="repeat for several grants",
    )
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.add_argument("--secret", default=None, help="token key [env SHOPCAST_SECRET]")
    token.add_argument("--secret-file", default=None, help="where serve keeps its generated key")

    args = parser.parse_args(argv)
    if args.command == "token":
        cfg = config_module.load(args)
        try:
            token_text = mint(
                cfg.resolve_secret(), room=args.room, identity=args.identity,
                grants=args.grant, name=args.name, ttl=args.ttl,
            )
        except ValueError as exc:  # e.g. a non-admin token for room '*'
            parser.error(str(exc))
        print(token_text)
        return
    if args.command in ("serve", "sfu"):  # media processes: refuse an aiortc we do not know
        aiortc_private.install_or_exit()
    cfg = config_module.load(args)
    logs.setup(cfg.log_level, cfg.log_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # uvloop is optional on platforms without it
        pass
    if args.command != "serve" and not cfg.redis:
        parser.error(f"shopcast {args.command} needs --redis URL (nodes meet in Redis)")
    asyncio.run(serve_forever(cfg, args.command, getattr(args, "demo_room", DEMO_ROOM)))


def demo_urls(cfg: config_module.Config, room: str) -> dict[str, str]:
    secret = cfg.resolve_secret()
    anchor = mint(secret, room=room, identity="anchor", grants=[Grant.PUBLISH, Grant.CHAT],
                  name="Anchor", ttl=DEMO_TTL)
    viewer = mint(secret, room=room, identity="viewer", grants=[Grant.SUBSCRIBE, Grant.CHAT],
                  name="Viewer", ttl=DEMO_TTL)
    guest = mint(secret, room=room, identity="guest",
                 grants=[Grant.COHOST, Grant.SUBSCRIBE, Grant.CHAT], name="Guest", ttl=DEMO_TTL)
    base = cfg.base_url
    rtmp_host = urlsplit(base).hostname or cfg.host
    return {
        "anchor": f"{base}/anchor?room={room}&token={anchor}",
        "cohost": f"{base}/cohost?room={room}&token={guest}",
        "viewer": f"{base}/viewer?room={room}&token={viewer}",
        "rtmp_server": f"rtmp://{rtmp_host}:{cfg.rtmp_port}/live",
        "rtmp_key": f"{room}?token={anchor}",
    }


def http_runner(app: web.Application, cfg: config_module.Config) -> web.AppRunner:
    """The app's runner with a header-read timeout. aiohttp (3.14) arms its keep-alive timer
    when a connection opens and again after each response, and closes the connection when it
    fires while no whole request has arrived: with the timeout set to ``http_header_timeout_ms``
    a client that never finishes its request line and headers (slowloris) is closed then,
    instead of after aiohttp's default of an hour. A request being handled (an upload, a
    WebSocket, an FLV stream) is not affected. 0 keeps aiohttp's own timer."""
    if cfg.http_header_timeout_ms <= 0:
        return web.AppRunner(app, access_log=None)
    return web.AppRunner(app, access_log=None,
                         keepalive_timeout=cfg.http_header_timeout_ms / 1000)


async def serve_forever(cfg: config_module.Config, role: str, demo_room: str) -> None:
    """Run one process of ``role`` until SIGINT/SIGTERM, then stop cleanly (an SFU node
    deregisters first, so its rooms are re-assignable at once, not after the heartbeat TTL)."""
    factory = {"serve": create_app, "signaling": create_signaling_app, "sfu": create_sfu_app}
    app = factory[role](cfg)
    runner = http_runner(app, cfg)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    if role == "sfu":
        print(f"ShopCast SFU node {app[SIGNALING_KEY].settings.node_id} is serving on "
              f"{cfg.base_url}", flush=True)
    else:
        urls = demo_urls(cfg, demo_room)
        print(f"ShopCast {'signaling ' if role == 'signaling' else ''}is serving on "
              f"{cfg.base_url}", flush=True)
        print(f"  anchor page: {urls['anchor']}", flush=True)
        print(f"  co-host page: {urls['cohost']}  (the anchor invites 'guest')", flush=True)
        print(f"  viewer page: {urls['viewer']}", flush=True)
        if role == "serve" and cfg.rtmp_port:
            print(f"  OBS / RTMP: server {urls['rtmp_server']}  stream key {urls['rtmp_key']}",
                  flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("shutting down")
    await runner.cleanup()


if __name__ == "__main__":
    main()
