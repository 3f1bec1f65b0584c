"""The REST API's route table: one ``Route`` per operation, from which both the aiohttp
routes and the OpenAPI document are made, so every route is documented and vice versa.

A route declares who may call it: the grant it needs and its scope, the rooms it acts on
(``signaling.api.access``). ``mount`` checks the bearer token against that declaration before
the handler runs, parses and validates the JSON body against the route's schema, and puts both
on the request. The body is
parsed within bounds (``signaling.json_bounds``: depth, finite numbers, integer size) before
any handler sees it, and a handler only runs on a body that fits, so a refusal writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from signaling.api.access import Scope, authorize_body, authorize_request, scope_of
from signaling.api.schema import Schema, validate
from signaling.errors import ApiError, bad_request
from signaling.json_bounds import JsonBoundsError, loads
from signaling.service import SIGNALING_KEY, Signaling
from signaling.tokens import Claims, Grant

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024

ApiHandler = Callable[["Call"], Awaitable[web.StreamResponse]]
ROUTES_KEY: web.AppKey[list[Route]] = web.AppKey("api_routes")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under PREFIX, with {name} parameters
    handler: ApiHandler
    summary: str
    operation_id: str
    tag: str
    grant: Grant | None = Grant.ADMIN  # None: no token needed (scope public)
    scope: Scope | None = None  # None: room with a {room} in the path, else deployment
    body: Schema | None = None
    response: Schema | None = None  # None: no body (204)
    status: int = 200
    errors: tuple[int, ...] = ()
    description: str = ""
    headers: dict[str, str] = field(default_factory=dict)  # request header -> description
    query: dict[str, Schema] = field(default_factory=dict)  # query parameter -> schema

    def __post_init__(self) -> None:
        scope_of(self)  # a declaration that cannot hold fails at import, not at a request

    @property
    def full_path(self) -> str:
        return PREFIX + self.path


@dataclass
class Call:
    """What a handler gets: the request, the verified claims, the validated body, services."""

    request: web.Request
    signaling: Signaling
    claims: Claims | None
    body: Any
    route: Route
    room_checked: bool = False

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    def require_room(self, room: str) -> None:
        """A resource's room (scope ``RESOURCE_ROOM``), once the handler found it: the caller's
        token must hold the route's grant there (403 otherwise)."""
        if self.claims is not None and self.route.grant is not None:
            self.claims.require(self.route.grant, room)
        self.room_checked = True


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, default=str))


async def _read_body(request: web.Request, schema: Schema) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", f"bodies are limited to {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "body_too_large", f"bodies are limited to {MAX_BODY} bytes")
    if not raw.strip():
        value: Any = {}
    else:
        try:
            value = loads(raw)  # depth, NaN/Infinity and integer size bounded before use
        except JsonBoundsError as exc:
            raise bad_request(f"body: {exc}", "invalid_body") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request(f"body is not JSON: {exc}", "malformed_json") from exc
    validate(schema, value)
    return value


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        signaling = request.app[SIGNALING_KEY]
        claims = authorize_request(route, signaling.settings.secret, request)
        body = await _read_body(request, route.body) if route.body is not None else None
        authorize_body(route, claims, body)
        call = Call(request, signaling, claims, body, route)
        response = await route.handler(call)
        if scope_of(route) is Scope.RESOURCE_ROOM and not call.room_checked:
            # fail closed: a handler of such a route that answered without the room check
            raise ApiError(500, "room_not_checked", "the route did not check the room")
        return response

    return endpoint


def mount(app: web.Application, routes: list[Route]) -> None:
    """Add ``routes`` to the app, and keep them on it: the table the app serves."""
    app[ROUTES_KEY] = routes
    for route in routes:
        app.router.add_route(route.method, route.full_path, _endpoint(route))
