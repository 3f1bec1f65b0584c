"""The signaling process's front door: WHIP and WHEP forwarded to the room's node, FLV
redirected there.

Why forward instead of redirect: WHIP/WHEP clients send their token in ``Authorization``, and
browsers, libcurl (OBS), reqwest (GStreamer's whipsink) and aiohttp all drop that header when
they follow a redirect to another origin, so a ``307`` to the node ends in ``401``. The front
door therefore checks the token and grant itself (an anonymous request never places a room),
places the room, and sends the SDP exchange to the node over internal HTTP with the client's
own ``Authorization`` (the node still does the one authorization step). The node's answer
comes back with ``Location`` on the front door's path, so the client's later ``DELETE`` comes
back here too and is forwarded to whichever node owns the room. Media then flows straight
between the client and the node: the answer SDP carries the node's ICE candidates.

HTTP-FLV keeps its ``307``: its ticket (or token) travels in the query, which a redirect keeps.

A node that died after its last heartbeat is still in the registry for up to the heartbeat TTL
(4.5 s): a forward to it fails to connect and the client gets ``503`` with ``Retry-After``.
The room's claim is left alone (this process may merely be cut off from a live node); once
the heartbeat lapses, the next publish re-places the room (``RoomPlacement.assign``) and the
reaper frees it within a second anyway.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from signaling.errors import ApiError, not_found
from signaling.flv_tickets import flv_claims
from signaling.nodes import HEARTBEAT_TTL_MS, NoNodeAvailable
from signaling.room_names import require_room_name
from signaling.routing import RETRY_AFTER_S, RoomPlacement, redirect
from signaling.tokens import authorize

logger = logging.getLogger("shopcast.signaling.front_door")

FORWARD_TIMEOUT_S = 15.0  # the node answers once aiortc has gathered its candidates
CONNECT_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 1 << 20  # the apps' client_max_size: the node would refuse more anyway
NODE_RETRY_AFTER_S = -(-HEARTBEAT_TTL_MS // 1000)  # by then a dead node's rooms can move
# End-to-end headers a WHIP/WHEP exchange needs; everything else (hop-by-hop headers, Host,
# cookies) stays here. The node's CORS headers are replaced by this app's own.
REQUEST_HEADERS = ("Authorization", "Content-Type", "Accept", "If-Match", "If-None-Match",
                   "User-Agent")
RESPONSE_HEADERS = ("Content-Type", "ETag", "Link", "Retry-After", "Accept-Patch", "Allow")
# How a forward ended: the node answered (whatever its status), or why it did not.
RESULTS = ("answered", "node_unavailable", "node_timeout", "bad_gateway", "node_redirect_loop",
           "front_door_closed")


class GatewayError(ApiError):
    """An ``ApiError`` with ``Retry-After``: the node, not the client, is at fault."""

    def to_response(self) -> web.Response:
        response = super().to_response()
        response.headers["Retry-After"] = str(NODE_RETRY_AFTER_S)
        return response


class NodeForwarder:
    """One HTTP client for the app's life, used to send WHIP/WHEP requests to nodes."""

    def __init__(
        self,
        timeout_s: float = FORWARD_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self.max_body = max_body
        self.results: dict[str, int] = dict.fromkeys(RESULTS, 0)  # for /metrics
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=self.timeout)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def forward(self, request: web.Request, node_url: str, body: bytes) -> web.Response:
        """``request`` (already read: ``body``) sent to ``node_url``; the node's 307 (the room
        moved) is followed once. Never raises anything but ``ApiError``."""
        try:
            response = await self._forward(request, node_url, body)
        except ApiError as exc:
            self.results[exc.code if exc.code in self.results else "bad_gateway"] += 1
            raise
        self.results["answered"] += 1
        return response

    def metric_lines(self) -> list[str]:
        name = "shopcast_front_door_forwards_total"
        return [f"# HELP {name} WHIP/WHEP requests forwarded to nodes, by result.",
                f"# TYPE {name} counter",
                *(f'{name}{{result="{r}"}} {n}' for r, n in self.results.items())]

    async def _forward(self, request: web.Request, node_url: str, body: bytes) -> web.Response:
        if self._http is None:
            raise GatewayError(503, "front_door_closed", "the front door is not running")
        target = node_url.rstrip("/") + request.path_qs
        headers = _forwarded_headers(request)
        try:
            for hop in range(2):
                async with self._http.request(
                    request.method, target, data=body, headers=headers, allow_redirects=False
                ) as resp:
                    moved = resp.headers.get("Location") if resp.status in (307, 308) else None
                    if moved is None:
                        payload = await _read_capped(resp, self.max_body)
                        return _client_response(resp, payload, target)
                if hop == 0:
                    target = urljoin(target, moved)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            logger.warning("node %s unreachable for %s %s: %s", target, request.method,
                           request.path, exc)
            raise GatewayError(503, "node_unavailable",
                               "the room's node is not answering; retry shortly") from exc
        except TimeoutError as exc:
            logger.warning("node %s timed out on %s %s", target, request.method, request.path)
            raise GatewayError(502, "node_timeout", "the room's node did not answer in time") \
                from exc
        except aiohttp.ClientError as exc:
            logger.warning("node %s failed on %s %s: %r", target, request.method,
                           request.path, exc)
            raise GatewayError(502, "bad_gateway", "the room's node gave no usable answer") \
                from exc
        logger.warning("node %s redirected %s %s twice", target, request.method, request.path)
        raise GatewayError(502, "node_redirect_loop", "the room is moving between nodes")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Header names listed in ``Connection`` are hop-by-hop too (RFC 9110 7.6.1)."""
    return {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}


def _forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The client's end-to-end headers, plus who the client is, for the node's logs."""
    hop_by_hop = _connection_tokens(request.headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name in REQUEST_HEADERS:
        if name in request.headers and name.lower() not in hop_by_hop:
            headers[name] = request.headers[name]
    client = request.remote or "unknown"
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    node = f'"[{client}]"' if ":" in client else client
    element = f'for={node};host="{request.host}";proto={request.scheme}'
    prior = request.headers.get("Forwarded")
    headers["Forwarded"] = f"{prior}, {element}" if prior else element
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    return headers


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise GatewayError(502, "bad_gateway", "the node's answer is too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise GatewayError(502, "bad_gateway", "the node's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)


def _client_response(resp: aiohttp.ClientResponse, payload: bytes, target: str) -> web.Response:
    """The node's status, body and end-to-end headers; ``Location`` as a path on this door."""
    hop_by_hop = _connection_tokens(resp.headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for name in RESPONSE_HEADERS:
        if name.lower() not in hop_by_hop:
            for value in resp.headers.getall(name, []):
                headers.add(name, value)
    location = resp.headers.get("Location")
    if location is not None:
        parts = urlsplit(urljoin(target, location))
        headers["Location"] = parts.path + (f"?{parts.query}" if parts.query else "")
    headers["Cache-Control"] = "no-store"
    return web.Response(status=resp.status, body=payload, headers=headers)


# --- handlers ----------------------------------------------------------------------------------

FRONT_DOOR_KEY = web.AppKey("room_placement", RoomPlacement)
FORWARDER_KEY = web.AppKey("node_forwarder", NodeForwarder)
SECRET = web.AppKey("front_door_secret", str)
PLAIN_FLV_TOKEN = web.AppKey("front_door_plain_flv_token", bool)


def _room(request: web.Request) -> str:
    return require_room_name(request.match_info["room"])


def _authorized(request: web.Request, publish: bool) -> str:
    """The room, once its name, the token and the media grant are checked (the node checks
    them again: it does the one authorization step)."""
    room = _room(request)
    authorize(request.app[SECRET], request.headers.get("Authorization"), publish=publish,
              room=room)
    return room


async def _offer(request: web.Request) -> bytes:
    """The SDP body; ``client_max_size`` answers ``413`` past the WHIP limit."""
    if request.content_type != "application/sdp":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/sdp")
    return await request.read()


async def _whip(request: web.Request) -> web.StreamResponse:
    room = _authorized(request, publish=True)
    body = await _offer(request)  # all refusals come before the room is placed
    try:
        owner = await request.app[FRONT_DOOR_KEY].assign(room)
    except NoNodeAvailable as exc:
        raise ApiError(503, "no_node", str(exc)) from exc
    return await request.app[FORWARDER_KEY].forward(request, owner.url, body)


async def _whep(request: web.Request) -> web.StreamResponse:
    room = _authorized(request, publish=False)
    owner = await request.app[FRONT_DOOR_KEY].live_owner(room)
    if owner is None:
        raise not_found(f"room {room!r} is not live", "not_live")
    return await request.app[FORWARDER_KEY].forward(request, owner.url, await _offer(request))


async def _resource(request: web.Request) -> web.StreamResponse:
    """DELETE/PATCH of a WHIP/WHEP resource, forwarded to the room's node: the node does the
    authorization step (it places nothing), and its answer passes through."""
    room = _room(request)
    owner = await request.app[FRONT_DOOR_KEY].live_owner(room)
    if owner is None:
        raise not_found(f"no session {request.match_info['id']!r} in room {room!r}")
    body = await request.read()
    return await request.app[FORWARDER_KEY].forward(request, owner.url, body)


async def _flv(request: web.Request) -> web.StreamResponse:
    room = _room(request)
    flv_claims(request.app[SECRET], room, authorization=request.headers.get("Authorization"),
               ticket=request.query.get("ticket"), query_token=request.query.get("token"),
               plain_token=request.app[PLAIN_FLV_TOKEN])
    placement = request.app[FRONT_DOOR_KEY]
    owner = await placement.live_owner(room)
    if owner is not None:
        return redirect(owner.url, request)
    if await placement.store.get_room(room) is None:
        raise not_found(f"room {room!r} does not exist", "not_found")
    response = ApiError(503, "not_live", f"room {room!r} is not live").to_response()
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def add_front_door(app: web.Application, placement: RoomPlacement, secret: str, *,
                   plain_flv_token: bool = False) -> NodeForwarder:
    """WHIP, WHEP and FLV on a signaling process, on the same URLs as a node's. The caller
    runs the returned forwarder for the app's life (``start``/``close``). ``plain_flv_token``:
    FLV takes ``?token=`` too, not only tickets (``--flv-plain-token``)."""
    forwarder = NodeForwarder()
    app[FRONT_DOOR_KEY] = placement
    app[FORWARDER_KEY] = forwarder
    app[SECRET] = secret
    app[PLAIN_FLV_TOKEN] = plain_flv_token
    app.router.add_post("/whip/{room}", _whip)
    app.router.add_post("/whep/{room}", _whep)
    app.router.add_get("/live/{room}.flv", _flv)
    for kind in ("whip", "whep"):
        app.router.add_delete(f"/{kind}/{{room}}/{{id}}", _resource)
        app.router.add_patch(f"/{kind}/{{room}}/{{id}}", _resource)
    return forwarder
