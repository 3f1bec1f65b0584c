"""The browser pages (anchor console, co-host, viewer, replay) and their static files."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from signaling.errors import not_found
from signaling.http_errors import Handler

PAGES = {"/": "index.html", "/anchor": "anchor.html", "/cohost": "cohost.html",
         "/viewer": "viewer.html", "/replay": "replay.html"}
# Browser libraries from npm (web/package.json, installed by ./dev setup into web/node_modules),
# served from here and never from a CDN: URL under /vendor/ -> file under the web directory.
VENDOR = {
    "mpegts.js": "node_modules/mpegts.js/dist/mpegts.js",
    "mpegts.js.map": "node_modules/mpegts.js/dist/mpegts.js.map",
}
# The only directories under /static/: what the pages load. The rest of the web directory
# (package.json, the lock file, node_modules/, the pages' own sources) is not served there.
STATIC_DIRS = ("css", "js")


def add_routes(app: web.Application, web_dir: Path) -> None:
    for path, filename in PAGES.items():
        app.router.add_get(path, _page(web_dir / filename))
    for name, relative in VENDOR.items():
        app.router.add_get(f"/vendor/{name}", _vendor(web_dir / relative))
    for name in STATIC_DIRS:
        app.router.add_static(f"/static/{name}/", web_dir / name, show_index=False,
                              follow_symlinks=False)


def _page(file: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(file, headers={"Cache-Control": "no-cache"})

    return handler


def _vendor(file: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not await asyncio.to_thread(file.is_file):
            raise not_found(f"{file.name} is not installed: run ./dev setup", "not_installed")
        return web.FileResponse(file, headers={"Cache-Control": "no-cache"})

    return handler
