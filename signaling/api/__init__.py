"""The developer REST API under /api/v1 and its OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from signaling.api import cohosts, commerce, forbid, moderation, nodes, participants, rooms, tokens
from signaling.api.openapi import document
from signaling.api.routes import PREFIX, Call, Route, json_response, mount

ROUTES: list[Route] = [
    *rooms.ROUTES, *participants.ROUTES, *tokens.ROUTES, *commerce.ROUTES, *moderation.ROUTES,
    *nodes.ROUTES, *cohosts.ROUTES, *forbid.ROUTES,
]


def add_routes(app: web.Application, extra: list[Route] | None = None) -> list[Route]:
    """Mount the API (plus ``extra`` routes, e.g. commerce) and its OpenAPI document."""
    table = [*ROUTES, *(extra or [])]

    async def openapi(call: Call) -> web.StreamResponse:
        return json_response(document(table, server_url=f"{call.request.url.origin()}"))

    table.append(Route("GET", "/openapi.json", openapi, "This OpenAPI document", "openapi",
                       "meta", grant=None, response={"type": "object"}))
    mount(app, table)
    return table


__all__ = ["PREFIX", "ROUTES", "Call", "Route", "add_routes", "json_response"]
