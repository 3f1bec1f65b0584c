"""The OpenAPI document matches the routes: every /api/v1 route is documented, every
documented operation answers (with the documented auth behaviour), and ids are unique."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from rest_helpers import Api

from signaling.api.schema import validate


async def fetch_document(server: Any) -> dict[str, Any]:
    status, document = await Api(server.url).get("/api/v1/openapi.json")
    assert status == 200
    assert isinstance(document, dict)
    return document


async def test_document_shape(server: Any) -> None:
    document = await fetch_document(server)
    assert document["openapi"].startswith("3.")
    operations = [op for path in document["paths"].values() for op in path.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    assert {"createRoom", "listRooms", "getRoom", "closeRoom", "listParticipants",
            "kickParticipant", "muteParticipant", "updateParticipant", "mintToken"} <= set(ids)
    for op in operations:
        for response in op["responses"].values():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            ref = schema.get("$ref")
            if ref:
                assert ref.split("/")[-1] in document["components"]["schemas"]


async def test_every_api_route_is_documented(server: Any) -> None:
    document = await fetch_document(server)
    documented = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    mounted = set()
    for route in server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path") or ""
        if path.startswith("/api/v1") and route.method not in ("HEAD", "OPTIONS"):
            mounted.add((route.method, path))
    assert mounted == documented


async def test_every_documented_operation_answers(server: Any) -> None:
    """Without a token a protected operation is a JSON 401, never a 404/405 route miss; the
    public ones answer 200."""
    document = await fetch_document(server)
    async with aiohttp.ClientSession() as http:
        for path, ops in document["paths"].items():
            url = server.url + re.sub(r"{[^}]+}", "x1", path)
            for method, op in ops.items():
                async with http.request(method.upper(), url, json={}) as response:
                    body = await response.json()
                    if op["security"]:
                        assert response.status == 401, (method, path, body)
                        validate(document["components"]["schemas"]["Error"], body)
                    else:
                        assert response.status == 200, (method, path)
