"""Who may call each REST route, tried on every route the app serves (issue 14 #7).

Generated, not listed: every route in the app's router under /api/v1 is called with a token
of every grant (and none) for this room, another room and ``*``, and with no token. The
expected answer comes from the route's declaration (grant and scope), computed here by the
rule docs/api.md states, not by the server's code: a refusal is 401, or 403 with a JSON body
and a documented code, and leaves nothing behind; an allowed call is never 401 or 403. A
route the router serves without a declaration fails. Memory backend: authorization happens
before any store call, and the one store check (nothing changed) reads the room's seq.

Beside the matrix: ``*`` without admin at the media and socket doors and at the event gateway,
a resource's-room route that fails closed, the OpenAPI document and docs/api.md carrying the
declaration.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Server
from live_helpers import send
from rest_helpers import forge_token, signaling_of

from signaling.api import docs
from signaling.api.access import TOKEN_QUERY, Scope, scope_of
from signaling.api.routes import PREFIX, ROUTES_KEY, Call, Route, json_response, mount
from signaling.http_errors import error_middleware
from signaling.service import SIGNALING_KEY
from signaling.tokens import Claims, Grant

ROOM = "authz"
OTHER = "elsewhere"
CALLER = "caller"  # every token's identity; also the {identity} of paths (its own)
GRANTS: tuple[Grant | None, ...] = (Grant.SUBSCRIBE, Grant.CHAT, Grant.PUBLISH, Grant.COHOST,
                                    Grant.ADMIN, None)
TOKEN_ROOMS = (ROOM, OTHER, "*")
DENIAL_CODES = {401: {"missing_token", "invalid_token"}, 403: {"missing_grant", "wrong_room"}}


@dataclass(frozen=True)
class Caller:
    """One token of the matrix: a grant (None: no grant at all) in a room, or no token."""

    grant: Grant | None
    room: str | None  # None: no token
    in_query: bool = False  # sent as ?token= (routes that declare it), not Authorization

    def __str__(self) -> str:
        if self.room is None:
            return "no token"
        where = " in ?token=" if self.in_query else ""
        return f"{self.grant.value if self.grant else 'no grant'} for {self.room!r}{where}"

    def token(self, server: Server) -> str:
        assert self.room is not None
        grants = [self.grant.value] if self.grant else []
        if self.room == "*" and self.grant is not Grant.ADMIN:  # mint refuses these
            return forge_token(server.config.secret, "*", CALLER, *grants)
        return server.token(self.room, CALLER, *grants)


def callers(route: Route) -> Iterator[Caller]:
    yield Caller(None, None)
    for grant, room in itertools.product(GRANTS, TOKEN_ROOMS):
        yield Caller(grant, room)
        if TOKEN_QUERY in route.query:
            yield Caller(grant, room, in_query=True)


def expected_allowed(route: Route, caller: Caller) -> bool:
    """docs/api.md's rule, restated: the grant (admin carries all) in a room the token covers;
    ``*`` is an admin-only room name and covers every room; deployment routes need it."""
    scope = scope_of(route)
    if scope is Scope.PUBLIC:
        return True
    if caller.room is None or caller.grant is None:
        return False
    if caller.room == "*":
        return caller.grant is Grant.ADMIN
    if caller.grant not in (route.grant, Grant.ADMIN):
        return False
    if scope is Scope.RESOURCE_ROOM:  # its room is known once it is found: none is, here
        return True
    # room routes act on ROOM; a minted token is for ROOM too (the body's room below)
    return scope is not Scope.DEPLOYMENT and caller.room == ROOM


def example(schema: dict[str, Any], name: str = "") -> Any:
    """A value the schema accepts, from its own words: the smallest that fits."""
    if name == "room":
        return ROOM
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: example(properties[key], key) for key in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}))] * max(1, schema.get("minItems", 0))
    if kind == "integer" or kind == "number":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return "a" * max(1, schema.get("minLength", 1))  # fits the name and sku patterns too


def filled(route: Route, node: str) -> str:
    values = {"room": ROOM, "identity": CALLER, "id": "1-0", "node": node}
    path = route.path
    for key, value in values.items():
        path = path.replace("{" + key + "}", value)
    assert "{" not in path, f"{route.path}: a path parameter this test cannot fill"
    return PREFIX + path


async def call(http: aiohttp.ClientSession, server: Server, route: Route, caller: Caller,
               node: str) -> tuple[int, Any]:
    headers = {name: f"key-{id(caller)}" for name in route.headers}
    query = {}
    if caller.in_query:
        query[TOKEN_QUERY] = caller.token(server)
    elif caller.room is not None:
        headers["Authorization"] = f"Bearer {caller.token(server)}"
    body = example(route.body) if route.body is not None else None
    async with http.request(route.method, server.url + filled(route, node), json=body,
                            headers=headers, params=query) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


def declared(server: Server) -> dict[tuple[str, str], Route]:
    return {(r.method, r.full_path): r for r in server.app[ROUTES_KEY]}


async def room_seq(server: Server) -> int:
    signaling = signaling_of(server)
    room = await signaling.store.get_room(ROOM)
    assert room is not None, "the matrix's room is gone"
    state = await signaling.rooms.state(room)
    return int(state["seq"])


async def test_every_served_route_is_declared(server: Server) -> None:
    table = declared(server)
    served = {(r.method, r.resource.canonical) for r in server.app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith(PREFIX + "/")}
    missing = sorted(served - set(table))
    assert not missing, f"served under {PREFIX} without a declaration: {missing}"
    assert set(table) <= served, "every declared route is served"
    assert len(table) >= 30  # the matrix below walks a real table, not an empty one


async def test_authorization_matrix(server: Server) -> None:
    signaling = signaling_of(server)
    routes = list(server.app[ROUTES_KEY])
    node = signaling.local_node().id if signaling.local_node is not None else "n1"
    await signaling.rooms.create(ROOM, None)
    await signaling.rooms.create(OTHER, None)
    rooms_before = sorted(r.name for r in await signaling.store.list_rooms(limit=1000))
    seq_before = await room_seq(server)
    wrong: list[str] = []
    allowed: list[tuple[Route, Caller]] = []
    async with aiohttp.ClientSession() as http:
        for route, caller in ((r, c) for r in routes for c in callers(r)):
            if expected_allowed(route, caller):
                allowed.append((route, caller))
                continue
            status, body = await call(http, server, route, caller, node)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            if code not in DENIAL_CODES.get(status, set()):
                wrong.append(f"{route.method} {route.path} with {caller}: {status} {body}")
            elif caller.room == "*" and caller.grant is not Grant.ADMIN and status != 401:
                wrong.append(f"{route.method} {route.path} with {caller}: {status}, not 401")
        assert not wrong, f"{len(wrong)} wrong refusals:\n" + "\n".join(wrong)
        # Refusals leave nothing behind: no room made, no event in the room.
        assert sorted(r.name for r in await signaling.store.list_rooms(limit=1000)) \
            == rooms_before
        assert await room_seq(server) == seq_before
        for route, caller in allowed:
            await signaling.rooms.create(ROOM, None)  # an allowed close may have taken it
            status, body = await call(http, server, route, caller, node)
            if status in (401, 403) or (status >= 500 and status != 504):
                wrong.append(f"{route.method} {route.path} with {caller}: {status} {body}")
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong)
    denied = sum(len(list(callers(r))) for r in routes) - len(allowed)
    assert denied > len(allowed) > len(routes)  # both sides of the matrix were exercised


async def test_a_room_admin_acts_on_its_room_only(server: Server) -> None:
    """The issue's case: an admin of room X neither creates nor lists rooms, nor mints for
    another room or ``*``; it manages X; ``*`` is an admin-only room name over REST too."""
    signaling = signaling_of(server)
    await signaling.rooms.create(ROOM, None)
    room_admin = {"Authorization": f"Bearer {server.token(ROOM, 'owner', 'admin')}"}
    root = {"Authorization": f"Bearer {server.token('*', 'ops', 'admin')}"}
    api = server.url + PREFIX
    async with aiohttp.ClientSession() as http:
        for method, path, body in (("POST", "/rooms", {"name": "grabbed"}),
                                   ("GET", "/rooms", None), ("GET", "/nodes", None),
                                   ("POST", "/tokens", {"room": OTHER, "identity": "x",
                                                        "grants": ["admin"]}),
                                   ("POST", "/tokens", {"room": "*", "identity": "x",
                                                        "grants": ["admin"]}),
                                   ("GET", f"/rooms/{OTHER}", None)):
            async with http.request(method, api + path, json=body,
                                    headers=room_admin) as response:
                answer = await response.json()
                assert (response.status, answer.get("error", {}).get("code")) \
                    == (403, "wrong_room"), (method, path, answer)
        assert await signaling.store.get_room("grabbed") is None
        async with http.get(f"{api}/rooms/{ROOM}", headers=room_admin) as response:
            assert response.status == 200
        async with http.post(f"{api}/tokens", headers=room_admin, json={
                "room": ROOM, "identity": "x", "grants": ["subscribe"]}) as response:
            assert response.status == 201
        async with http.post(f"{api}/tokens", headers=root, json={
                "room": "*", "identity": "x", "grants": ["subscribe"]}) as response:
            answer = await response.json()
            assert (response.status, answer["error"]["code"]) == (400, "wildcard_needs_admin")
        async with http.get(f"{api}/rooms", headers=root) as response:
            assert response.status == 200
            assert ROOM in [r["name"] for r in (await response.json())["rooms"]]


async def test_openapi_carries_each_routes_declaration(server: Server) -> None:
    async with aiohttp.ClientSession() as http, \
            http.get(server.url + PREFIX + "/openapi.json") as response:
        document = await response.json()
    for (method, path), route in declared(server).items():
        operation = document["paths"][path][method.lower()]
        if route.grant is None:
            assert operation["security"] == [] and "x-shopcast-scope" not in operation
        else:
            assert operation["x-shopcast-grant"] == route.grant.value
            assert operation["x-shopcast-scope"] == scope_of(route).value


def test_docs_match_the_declaration() -> None:
    assert docs.generated_part(docs.DOC.read_text()) == docs.render(), \
        "run: python -m signaling.api.docs"


async def test_every_door_refuses_a_wildcard_token_without_admin(server: Server) -> None:
    """``*`` on a non-admin token is refused at the media and socket doors too (401), while an
    admin token for ``*`` passes their room check and a room's admin stays in its room. (FLV
    takes a Bearer header too; its URLs carry tickets from the playback plan, a REST route of
    the matrix above.)"""
    await signaling_of(server).rooms.create(ROOM, None)
    secret = server.config.secret
    sdp = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        for grant in ("subscribe", "publish", "chat", "cohost"):
            wildcard = forge_token(secret, "*", CALLER, grant)
            bearer = {"Authorization": f"Bearer {wildcard}"}
            for method, path, headers, data in (
                    ("POST", f"/whip/{ROOM}", {**bearer, **sdp}, "v=0\r\n"),
                    ("POST", f"/whep/{ROOM}", {**bearer, **sdp}, "v=0\r\n"),
                    ("GET", f"/live/{ROOM}.flv", bearer, None),
                    ("GET", f"/ws?token={wildcard}", {}, None),
                    ("GET", f"/ws/events/{ROOM}?token={wildcard}", {}, None)):
                async with http.request(method, server.url + path, headers=headers,
                                        data=data) as response:
                    body = await response.json()
                    assert (response.status, body["error"]["code"]) == (401, "invalid_token"), \
                        (grant, method, path, body)
        events = server.url.replace("http", "ws", 1) + f"/ws/events/{ROOM}?token="
        async with http.ws_connect(events + server.token("*", "ops", "admin")) as socket:
            first = await socket.receive(timeout=5)
            assert first.type == aiohttp.WSMsgType.BINARY  # the room's state: it is in
        async with http.get(events.replace("ws", "http", 1)
                            + server.token(OTHER, "owner", "admin")) as response:
            body = await response.json()
            assert (response.status, body["error"]["code"]) == (403, "wrong_room")


async def test_a_resource_room_route_fails_closed(server: Server) -> None:
    """A route whose room is its resource's: the handler's ``require_room`` holds the token to
    that room, and a handler that answers without calling it is a 500, never a success."""
    async def checked(call: Call) -> web.StreamResponse:
        call.require_room(ROOM)  # the resource, found, is in ROOM
        return json_response({"ok": True})

    async def forgetful(call: Call) -> web.StreamResponse:
        return json_response({"ok": True})

    app = web.Application(middlewares=[error_middleware])  # ApiError -> JSON, as the app's
    app[SIGNALING_KEY] = signaling_of(server)
    mount(app, [Route("GET", "/things/{id}", checked, "A thing", "getThing", "things",
                      grant=Grant.SUBSCRIBE, scope=Scope.RESOURCE_ROOM),
                Route("GET", "/others/{id}", forgetful, "Another", "getOther", "things",
                      grant=Grant.SUBSCRIBE, scope=Scope.RESOURCE_ROOM)])
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            async def get(path: str, token: str) -> tuple[int, Any]:
                async with http.get(str(test_server.make_url(PREFIX + path)),
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                    return response.status, await response.json()

            assert await get("/things/1", server.token(ROOM, "v", "subscribe")) \
                == (200, {"ok": True})
            status, body = await get("/things/1", server.token(OTHER, "v", "subscribe"))
            assert (status, body["error"]["code"]) == (403, "wrong_room")
            status, body = await get("/things/1", server.token(ROOM, "v", "chat"))
            assert (status, body["error"]["code"]) == (403, "missing_grant")
            status, body = await get("/others/1", server.token(ROOM, "v", "subscribe"))
            assert (status, body["error"]["code"]) == (500, "room_not_checked")
    finally:
        await test_server.close()


async def test_the_event_gateway_holds_claims_to_their_room(server: Server) -> None:
    """The events data channel, /ws and /ws/events hand messages to the gateway with claims
    already verified; the gateway still holds them to the room (``Claims.covers``), so claims
    for ``*`` without admin, however they were made, act nowhere."""
    gateway = signaling_of(server).live
    await signaling_of(server).rooms.create(ROOM, None)
    chat = {"type": "chat", "text": "hello"}
    for who in (Claims(identity=CALLER, room="*", grants=frozenset({Grant.CHAT})),
                Claims(identity=CALLER, room=OTHER, grants=frozenset({Grant.ADMIN}))):
        replies = await send(gateway, who, ROOM, **chat)
        assert [(r["type"], r.get("code")) for r in replies] == [("error", "forbidden")], who
    root = Claims(identity=CALLER, room="*", grants=frozenset({Grant.ADMIN}))
    assert [r for r in await send(gateway, root, ROOM, **chat) if r["type"] == "error"] == []
