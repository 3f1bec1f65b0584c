"""The OpenAPI 3.1 document, built from the route table (never written by hand)."""

from __future__ import annotations

import re
from typing import Any

from signaling.api.access import scope_of
from signaling.api.routes import Route
from signaling.api.schema import COMPONENTS, ref

_PARAM = re.compile(r"{([^}/]+)}")
_ERROR_TEXT = {
    400: "Malformed or invalid request",
    401: "Missing, invalid or expired token",
    403: "The token lacks the grant or does not cover the room (see x-shopcast-scope)",
    404: "No such room or participant",
    409: "Conflicts with the current state",
    413: "Body too large",
}


def _operation(route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(route.path)
        ]
        + [
            {"name": header, "in": "header", "required": False, "description": text,
             "schema": {"type": "string"}}
            for header, text in route.headers.items()
        ]
        + [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in route.query.items()
        ],
    }
    if route.description:
        operation["description"] = route.description
    if route.body is not None:
        operation["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": route.body}},
        }
    success: dict[str, Any] = {"description": "OK" if route.status < 300 else "Done"}
    if route.response is not None:
        success["content"] = {"application/json": {"schema": route.response}}
    responses: dict[str, Any] = {str(route.status): success}
    codes = set(route.errors)
    if route.grant is not None:
        codes |= {401, 403}
        operation["security"] = [{"bearer": []}]
        operation["x-shopcast-grant"] = route.grant.value
        operation["x-shopcast-scope"] = scope_of(route).value
    else:
        operation["security"] = []
    if route.body is not None:
        codes |= {400, 413}
    for code in sorted(codes):
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {"application/json": {"schema": ref("Error")}},
        }
    operation["responses"] = responses
    return operation


def document(routes: list[Route], server_url: str = "/") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.full_path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ShopCast API",
            "version": "1",
            "description": "Rooms, participants and tokens of a ShopCast deployment. Every "
            "error is JSON: {\"error\": {\"code\", \"message\"}}. Tokens are JWTs (HS256) "
            "sent as 'Authorization: Bearer <token>'; management needs the admin grant.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
