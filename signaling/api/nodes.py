"""REST: the SFU node registry (list, drain) and a room's playback plan.

The playback plan is how a viewer page decides between WebRTC and HTTP-FLV without knowing
the deployment: WHEP while the room's node is under its WebRTC viewer cap, the FLV URL once it
is full, so a large audience spills over to FLV on its own. URLs point at the owning node, so
the client needs no redirect (browsers drop ``Authorization`` on a cross-origin redirect). The
FLV URL carries a short-lived ticket for the caller (``signaling/flv_tickets.py``), so a player
needs no token in its URL and a leaked link stops working.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from signaling.api.routes import Call, Route, json_response
from signaling.api.schema import STRING, array, obj
from signaling.errors import ApiError, not_found
from signaling.flv_tickets import TICKET_TTL_S, issue
from signaling.nodes import DRAIN_TOPIC
from signaling.routing import RoomPlacement
from signaling.store import NodeRecord
from signaling.tokens import Grant

DRAIN_CONFIRM_S = 3.0

NODE = obj(
    ["id", "url", "publishers", "viewers", "cpu", "bitrate_bps", "max_viewers", "draining",
     "seen_at"],
    id=STRING, url=STRING, publishers={"type": "integer"},
    viewers={"type": "integer", "description": "WebRTC viewers"},
    cpu={"type": "number", "description": "CPU in use, in cores"},
    bitrate_bps={"type": "integer", "description": "media in plus media out, bits/s"},
    max_viewers={"type": "integer", "description": "WebRTC viewer cap (0: none)"},
    draining={"type": "boolean"}, seen_at={"type": "number", "description": "last heartbeat"},
)
PLAN = obj(
    ["room", "transport", "url", "whep_url", "flv_url", "node", "viewers", "max_viewers"],
    room=STRING,
    transport={"type": "string", "enum": ["whep", "flv"]},
    url={"type": "string", "description": "where to play, for the chosen transport"},
    whep_url=STRING,
    flv_url={"type": "string", "description": "with ?ticket=: start playing within "
             f"{TICKET_TTL_S} s (a started stream plays on); ask again after that"},
    node=STRING, viewers={"type": "integer"}, max_viewers={"type": "integer"},
)


async def list_nodes(call: Call) -> web.StreamResponse:
    nodes = await call.signaling.store.list_nodes()
    return json_response({"nodes": [n.to_json() for n in nodes]})


async def drain_node(call: Call) -> web.StreamResponse:
    """Tell the node over the bus, then wait for its heartbeat to say so: the answer means
    no router will place a new room there any more. Nodes serve every room, so the route's
    scope is the deployment (an admin token for ``*``), like listing them."""
    node_id, draining = call.param("node"), bool(call.body.get("draining", True))
    store = call.signaling.store
    if node_id not in {n.id for n in await store.list_nodes()}:
        raise not_found(f"no live node {node_id!r}", "node_not_found")
    await call.signaling.bus.notify(DRAIN_TOPIC,
                                    {"op": "drain", "node": node_id, "draining": draining})
    deadline = time.monotonic() + DRAIN_CONFIRM_S
    while time.monotonic() < deadline:
        node = next((n for n in await store.list_nodes() if n.id == node_id), None)
        if node is None:
            raise not_found(f"node {node_id!r} stopped", "node_not_found")
        if node.draining == draining:
            return json_response(node.to_json())
        await asyncio.sleep(0.05)
    raise ApiError(504, "node_unresponsive", f"node {node_id!r} did not confirm in time")


def plan(room: str, node: NodeRecord, ticket: str) -> dict[str, object]:
    base = node.url.rstrip("/")
    whep, flv = f"{base}/whep/{room}", f"{base}/live/{room}.flv?ticket={ticket}"
    full = bool(node.max_viewers) and node.viewers >= node.max_viewers
    return {
        "room": room, "transport": "flv" if full else "whep", "url": flv if full else whep,
        "whep_url": whep, "flv_url": flv, "node": node.id, "viewers": node.viewers,
        "max_viewers": node.max_viewers,
    }


async def playback(call: Call) -> web.StreamResponse:
    room = call.param("room")
    signaling = call.signaling
    if await signaling.store.get_room(room) is None:
        raise not_found(f"no room {room!r}", "room_not_found")
    node = await RoomPlacement(signaling.store, signaling.rooms).live_owner(room)
    if node is None and signaling.local_node is not None:
        node = signaling.local_node()  # shopcast serve: the one node is this process
    if node is None:
        raise not_found(f"room {room!r} is not live on any node", "not_live")
    assert call.claims is not None  # the route needs subscribe
    return json_response(plan(room, node, issue(signaling.settings.secret, call.claims, room)))


ROUTES = [
    Route("GET", "/nodes", list_nodes, "List live SFU nodes with their load", "listNodes",
          "nodes", response=obj(["nodes"], nodes=array(NODE)), errors=(403,),
          description="Needs an admin token for room '*'. Dead nodes (no heartbeat for 4.5 s) "
          "are not listed."),
    Route("POST", "/nodes/{node}/drain", drain_node, "Drain a node (no new rooms)",
          "drainNode", "nodes",
          body=obj([], draining={"type": "boolean", "description": "false re-opens it"}),
          response=NODE, errors=(403, 404, 504),
          description="The node takes no new rooms; its rooms finish. Answers once the "
          "node's heartbeat shows the new state. Needs an admin token for room '*'."),
    Route("GET", "/rooms/{room}/playback", playback, "How a viewer should watch a room",
          "getPlayback", "rooms", grant=Grant.SUBSCRIBE, response=PLAN, errors=(404,),
          description="WHEP on the room's node while it is under its WebRTC viewer cap, "
          "else the HTTP-FLV URL. The FLV URL carries a ticket for the caller's identity that "
          f"starts a stream within {TICKET_TTL_S} s. 404 not_live when no node serves the "
          "room."),
]
