"""The soak's churning clients, one seat at a time: a seat joins, stays a while, leaves, and
joins again until its room ends. Every failure is counted by operation and cause in a
``Tally``; nothing a client sees is retried silently.

A seat still connected when its room ends is left connected: the room is then closed over REST
with sessions on it (the server must end them), and only afterwards closed on the client side.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgpack

from loadtest.clients import SignalingError, Viewer, play
from loadtest.stats import mint_token

TTL = 4 * 3600
MAX_EXAMPLES = 50
CONNECT_TIMEOUT_S = 10.0
FLV_READ_TIMEOUT_S = 10.0
FLV_CHUNK = 64 * 1024
WS_MAX_MESSAGE = 1 << 20
BUYERS_PER_ROOM = 40
BUY_RETRY_SHARE = 0.1
# Answers a purchase may get in a healthy sale: they are outcomes, not errors.
ORDER_OUTCOMES = {"sold_out", "limit_reached", "sale_closed"}


class Tally:
    """Operations done and errors seen, by name; live clients by kind; a few error examples."""

    def __init__(self) -> None:
        self.ops: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.bytes: collections.Counter[str] = collections.Counter()  # payload read, by kind
        self.live: collections.Counter[str] = collections.Counter()

    def ok(self, op: str) -> None:
        self.ops[op] += 1

    def error(self, op: str, cause: str, detail: str = "") -> None:
        self.errors[f"{op}:{cause}"] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{time.strftime('%H:%M:%S')} {op}:{cause} {detail[:200]}")

    def snapshot(self) -> dict[str, Any]:
        return {"ops": sum(self.ops.values()), "errors": sum(self.errors.values()),
                "live": dict(self.live)}


class RoomClients:
    """What one live room's seats share: the server, the room, its deadline, the tally, and
    the clients still connected when the room ends."""

    def __init__(self, http: aiohttp.ClientSession, url: str, secret: str, room: str,
                 ends_at: float, tally: Tally, sku: str) -> None:
        self.http, self.url, self.secret, self.room = http, url, secret, room
        self.ends_at, self.tally, self.sku = ends_at, tally, sku
        self.held: list[Callable[[], Awaitable[Any]]] = []  # closers run after the room closes

    def token(self, identity: str, grants: list[str]) -> str:
        return mint_token(self.secret, self.room, identity, grants, TTL)

    def left(self) -> float:
        return self.ends_at - time.monotonic()

    async def stay(self, low: float, high: float) -> bool:
        """Sleep a random while, cut at the room's end; True if the room is still on after."""
        await asyncio.sleep(max(0.0, min(random.uniform(low, high), self.left())))
        return self.left() > 0

    def hold(self, kind: str, closer: Callable[[], Awaitable[Any]]) -> None:
        self.tally.live[kind] -= 1
        self.held.append(closer)

    async def close_held(self) -> None:
        for closer in self.held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closer(), CONNECT_TIMEOUT_S)
        self.held.clear()


# --- WebRTC viewers --------------------------------------------------------------------------


async def viewer_seat(rc: RoomClients, seat: int, stay_s: tuple[float, float]) -> None:
    """A WHEP viewer (packet counting, no decoding); every third seat (0, 3, ...) opens the
    ``events`` data channel and taps like. It must connect, get media (and its channel's
    ``state``), and its DELETE on leaving must answer 200/204."""
    n = 0
    while rc.left() > 2:
        n += 1
        identity = f"v{seat}-{n}-{uuid.uuid4().hex[:6]}"
        events = seat % 3 == 0
        try:
            viewer = await play(rc.url, rc.room, rc.token(identity, ["subscribe"]),
                                decode=False, session=rc.http, events=events)
        except SignalingError as exc:
            rc.tally.error("whep", f"{exc.status}_{exc.code}", exc.message)
            await rc.stay(1, 2)
            continue
        except Exception as exc:  # a failed negotiation of any kind is a counted error
            rc.tally.error("whep", type(exc).__name__, str(exc))
            await rc.stay(1, 2)
            continue
        rc.tally.live["whep"] += 1
        if not await viewer.wait_connected(CONNECT_TIMEOUT_S):
            rc.tally.error("whep", "not_connected")
            rc.tally.live["whep"] -= 1
            await viewer.close()
            continue
        rc.tally.ok("whep_join")
        if events and viewer.events is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(viewer.events.opened.wait(), CONNECT_TIMEOUT_S)
            if viewer.events.opened.is_set():
                viewer.events.send({"type": "like", "count": random.randint(1, 5)})
        still_on = await rc.stay(*stay_s)
        _check_viewer(rc, viewer, events)
        if not still_on:
            rc.hold("whep", viewer.close)
            return
        await viewer.close()
        rc.tally.live["whep"] -= 1
        if viewer.delete_status in (200, 204):
            rc.tally.ok("whep_leave")
        else:
            rc.tally.error("whep_delete", str(viewer.delete_status))
        await rc.stay(0.5, 2)


def _check_viewer(rc: RoomClients, viewer: Viewer, events: bool) -> None:
    if viewer.packets == 0:
        rc.tally.error("whep", "no_media")
    if events and viewer.events is not None:
        if viewer.events.of_type("state"):
            rc.tally.ok("datachannel_state")
        else:
            rc.tally.error("datachannel", "no_state")


# --- HTTP-FLV readers ------------------------------------------------------------------------


async def flv_seat(rc: RoomClients, seat: int, stay_s: tuple[float, float]) -> None:
    """An HTTP-FLV reader from the playback plan's ``flv_url``: 200, an ``FLV`` header, and
    bytes all along its stay."""
    n = 0
    while rc.left() > 2:
        n += 1
        token = rc.token(f"f{seat}-{n}", ["subscribe"])
        url = await _flv_url(rc, token)
        if url is None:
            await rc.stay(1, 2)
            continue
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S,
                                        sock_read=FLV_READ_TIMEOUT_S)
        try:
            resp = await rc.http.get(url, timeout=timeout)
        except (aiohttp.ClientError, TimeoutError) as exc:
            rc.tally.error("flv", type(exc).__name__, str(exc))
            await rc.stay(1, 2)
            continue
        if resp.status != 200:
            rc.tally.error("flv", str(resp.status), (await resp.text())[:200])
            resp.release()
            await rc.stay(1, 2)
            continue
        rc.tally.live["flv"] += 1
        still_on = await _read_flv(rc, resp, random.uniform(*stay_s))
        if not still_on:
            rc.hold("flv", _closer(resp))
            return
        resp.close()
        rc.tally.live["flv"] -= 1
        await rc.stay(0.5, 2)


def _closer(resp: aiohttp.ClientResponse) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        resp.close()
    return close


async def _flv_url(rc: RoomClients, token: str) -> str | None:
    status, body = await rest(rc, "playback", "GET", f"/rooms/{rc.room}/playback", token)
    if status != 200 or not isinstance(body, dict) or not body.get("flv_url"):
        return None
    url = str(body["flv_url"])
    if "ticket=" in url:
        return url
    return url + ("&" if "?" in url else "?") + f"token={token}"


async def _read_flv(rc: RoomClients, resp: aiohttp.ClientResponse, seconds: float) -> bool:
    """Read for `seconds` (cut at the room's end); True if the room is still on after."""
    until = min(time.monotonic() + seconds, rc.ends_at)
    got = 0
    header = b""
    try:
        while time.monotonic() < until:
            chunk = await asyncio.wait_for(resp.content.read(FLV_CHUNK), FLV_READ_TIMEOUT_S)
            if not chunk:
                rc.tally.error("flv", "ended_early", f"after {got} bytes")
                return rc.left() > 0
            if len(header) < 3:
                header += chunk[:3]
            got += len(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        rc.tally.error("flv", type(exc).__name__, f"after {got} bytes")
        return rc.left() > 0
    if not header.startswith(b"FLV"):
        rc.tally.error("flv", "no_flv_header", repr(header))
    elif got:
        rc.tally.ok("flv_read")
        rc.tally.bytes["flv"] += got
    return rc.left() > 0


# --- /ws/events: chat and likes --------------------------------------------------------------


async def ws_seat(rc: RoomClients, seat: int, stay_s: tuple[float, float]) -> None:
    """A ``/ws/events`` client that chats every 2-4 s and taps like: it must get ``state``
    first, and the server's ``error`` events are counted by code."""
    base = rc.url.replace("http", "ws", 1)
    n = 0
    while rc.left() > 2:
        n += 1
        token = rc.token(f"w{seat}-{n}", ["subscribe", "chat"])
        try:
            ws = await rc.http.ws_connect(f"{base}/ws/events/{rc.room}?token={token}",
                                          max_msg_size=WS_MAX_MESSAGE)
        except (aiohttp.ClientError, TimeoutError) as exc:
            rc.tally.error("ws", type(exc).__name__, str(exc))
            await rc.stay(1, 2)
            continue
        rc.tally.live["ws"] += 1
        got_state = asyncio.Event()
        reader = asyncio.create_task(_read_ws(rc, ws, got_state))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(got_state.wait(), CONNECT_TIMEOUT_S)
        if not got_state.is_set():
            rc.tally.error("ws", "no_state")
        until = min(time.monotonic() + random.uniform(*stay_s), rc.ends_at)
        while time.monotonic() < until and not ws.closed:
            try:
                await ws.send_bytes(msgpack.packb({"type": "chat", "text": f"hi {seat}-{n}"}))
                await ws.send_bytes(msgpack.packb({"type": "like",
                                                   "count": random.randint(1, 10)}))
                rc.tally.ok("ws_chat")
            except (aiohttp.ClientError, ConnectionError) as exc:
                rc.tally.error("ws_send", type(exc).__name__, str(exc))
                break
            await asyncio.sleep(max(0.0, min(random.uniform(2, 4), until - time.monotonic())))
        if rc.left() <= 0 and not ws.closed:
            rc.hold("ws", _ws_closer(ws, reader))
            return
        if ws.closed:
            rc.tally.error("ws", "closed_by_server", str(ws.close_code))
        await _ws_closer(ws, reader)()
        rc.tally.live["ws"] -= 1
        await rc.stay(0.5, 2)


def _ws_closer(ws: aiohttp.ClientWebSocketResponse,
               reader: asyncio.Task[None]) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        await ws.close()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    return close


async def _read_ws(rc: RoomClients, ws: aiohttp.ClientWebSocketResponse,
                   got_state: asyncio.Event) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY:
            break
        event = msgpack.unpackb(message.data, raw=False)
        kind = event.get("type")
        if kind == "state":
            got_state.set()
        elif kind == "error":
            rc.tally.ok(f"ws_error_event_{event.get('code')}")
        else:
            rc.tally.ok("ws_event")


# --- REST and purchases ----------------------------------------------------------------------


async def rest(rc: RoomClients, op: str, method: str, path: str, token: str,
               json: Any = None, headers: dict[str, str] | None = None,
               outcomes: set[str] | frozenset[str] = frozenset()) -> tuple[int, Any]:
    """One REST call under /api/v1, counted: 2xx and the named error codes are operations,
    anything else (and no answer at all) an error. Returns (status, JSON body or None)."""
    return await rest_call(rc.http, rc.url, rc.tally, op, method, path, token, json, headers,
                           outcomes)


async def rest_call(http: aiohttp.ClientSession, url: str, tally: Tally, op: str, method: str,
                    path: str, token: str, json: Any = None,
                    headers: dict[str, str] | None = None,
                    outcomes: set[str] | frozenset[str] = frozenset()) -> tuple[int, Any]:
    all_headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    try:
        async with http.request(method, f"{url}/api/v1{path}", json=json,
                                headers=all_headers) as resp:
            status = resp.status
            body = await resp.json(content_type=None) if status != 204 else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        tally.error(op, type(exc).__name__, str(exc))
        return 0, None
    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    if 200 <= status < 300:
        tally.ok(op)
    elif code in outcomes:
        tally.ok(f"{op}_{code}")
    else:
        tally.error(op, f"{status}_{code}", str(body)[:200])
    return status, body


async def buyer_loop(rc: RoomClients) -> None:
    """Purchases of the room's sale, each with a fresh ``Idempotency-Key``; a share re-sends
    the previous key, which must answer 200 with the same order."""
    last: tuple[str, str, str] | None = None  # (token, key, order id)
    while await rc.stay(0.4, 1.2):
        if last is not None and random.random() < BUY_RETRY_SHARE:
            token, key, order_id = last
            status, body = await rest(rc, "order_retry", "POST", f"/rooms/{rc.room}/orders",
                                      token, {"sku": rc.sku}, {"Idempotency-Key": key})
            if status == 201 or (isinstance(body, dict) and status == 200
                                 and body.get("id") != order_id):
                rc.tally.error("order_retry", "not_the_same_order",
                               f"{status} {order_id} -> {body.get('id')}")
            continue
        token = rc.token(f"b{random.randrange(BUYERS_PER_ROOM)}", ["subscribe"])
        key = uuid.uuid4().hex
        status, body = await rest(rc, "order", "POST", f"/rooms/{rc.room}/orders", token,
                                  {"sku": rc.sku}, {"Idempotency-Key": key},
                                  outcomes=ORDER_OUTCOMES)
        if status == 201 and isinstance(body, dict):
            last = (token, key, str(body.get("id")))
