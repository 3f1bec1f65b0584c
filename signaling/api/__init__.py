"""The developer REST API under /api/v1 and its OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from signaling.api import (
    cohosts,
    commerce,
    forbid,
    health,
    moderation,
    nodes,
    participants,
    recordings,
    replay,
    rooms,
    snapshots,
    tokens,
)
from signaling.api.openapi import document
from signaling.api.routes import PREFIX, ROUTES_KEY, Call, Route, json_response, mount

ROUTES: list[Route] = [
    *rooms.ROUTES, *participants.ROUTES, *tokens.ROUTES, *commerce.ROUTES, *moderation.ROUTES,
    *nodes.ROUTES, *cohosts.ROUTES, *forbid.ROUTES, *recordings.ROUTES, *replay.ROUTES,
    *snapshots.ROUTES, *health.ROUTES,
]


async def openapi(call: Call) -> web.StreamResponse:
    """The document of the routes this app serves."""
    table = call.request.app[ROUTES_KEY]
    return json_response(document(table, server_url=f"{call.request.url.origin()}"))


OPENAPI = Route("GET", "/openapi.json", openapi, "This OpenAPI document", "openapi", "meta",
                grant=None, response={"type": "object"})


def table(extra: list[Route] | None = None) -> list[Route]:
    """Every route the API serves: ``ROUTES``, ``extra`` ones, and the OpenAPI document."""
    return [*ROUTES, *(extra or []), OPENAPI]


def add_routes(app: web.Application, extra: list[Route] | None = None) -> list[Route]:
    """Mount the API (plus ``extra`` routes) and its OpenAPI document."""
    routes = table(extra)
    mount(app, routes)
    return routes


__all__ = ["PREFIX", "ROUTES", "Call", "Route", "add_routes", "json_response", "table"]
