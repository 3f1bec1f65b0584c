"""The browser pages (anchor console, viewer) and their static files, with no build step."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from signaling.errors import Handler

PAGES = {"/": "index.html", "/anchor": "anchor.html", "/viewer": "viewer.html"}


def add_routes(app: web.Application, web_dir: Path) -> None:
    for path, filename in PAGES.items():
        app.router.add_get(path, _page(web_dir / filename))
    app.router.add_static("/static/", web_dir, show_index=False, follow_symlinks=False)


def _page(file: Path) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(file, headers={"Cache-Control": "no-cache"})

    return handler
