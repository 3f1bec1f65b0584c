"""The product timeline: commerce events kept with their wall time where they are published,
bounded per room and freed with the room, put on a recording's clock; and the replay page's
pure "cards at time t" (web/js/replay_timeline.js), run in node.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from rest_helpers import Api

from shopcast.config import Config
from signaling.bus import Bus, Event
from signaling.claims import Claims, Grant
from signaling.live.timeline import Kept, Timeline, on_recording_clock
from signaling.recordings_index import RECORDINGS_KEY, RecordingMeta, new_recording_id
from signaling.service import SIGNALING_KEY
from signaling.store import Store

if TYPE_CHECKING:
    from tests.conftest import Server

pytest_plugins = ["store_fixtures"]  # backend, store, bus: memory and redis

WEB = Path(__file__).resolve().parent.parent / "web"
PRODUCT = {"sku": "mug", "title": "Mug", "price": 1200, "currency": "USD", "image_url": ""}


def event(type_: str, **fields: Any) -> dict[str, Any]:
    """A room event as the bus carries it (the schema's checks are not the timeline's)."""
    return {"type": type_, **fields}


def kept(n: int, wall: float, type_: str, **fields: Any) -> Kept:
    return Kept(n, wall, {"type": type_, "seq": n, **fields})


# --- kept where published, both backends ---------------------------------------------------


async def test_commerce_events_are_kept_with_their_wall_time(store: Store, bus: Bus) -> None:
    timeline = Timeline(store, bus)
    await store.create_room("r")
    await timeline.publish("r", event("product_pinned", product=PRODUCT))
    await timeline.publish("r", event("likes", total=3))  # not commerce: published, not kept
    await timeline.publish("r", event("chat", id="c1", text="hi"))  # chat is off by default
    await timeline.publish("r", event("sale", sku="mug", stock=5, remaining=5))
    await timeline.publish("r", event("stock", sku="mug", remaining=4))
    await timeline.publish("r", event("sold_out", sku="mug"))
    await timeline.publish("r", event("product_pinned", product=None))
    items, lost_before = await timeline.kept("r")
    assert lost_before == []
    assert [k.event["type"] for k in items] == [
        "product_pinned", "sale", "stock", "sold_out", "product_pinned"]
    assert [k.event["seq"] for k in items] == [1, 4, 5, 6, 7]  # in seq order across rings
    assert [k.n for k in items] == [1, 2, 1, 3, 4]  # stock has a ring of its own
    assert all(a.wall <= b.wall for a, b in itertools.pairwise(items))
    assert [e.type for e in await bus.history("r")] == [
        "product_pinned", "likes", "chat", "sale", "stock", "sold_out", "product_pinned"]
    assert items[0].event["seq"] == 1 and items[0].event["product"] == PRODUCT


async def test_chat_is_kept_only_when_asked(store: Store, bus: Bus) -> None:
    timeline = Timeline(store, bus, chat=True)
    await timeline.publish("r", event("chat", id="c1", text="hi"))
    await timeline.publish("r", event("chat_deleted", id="c1"))
    items, _ = await timeline.kept("r")
    assert [(k.event["type"], k.event["id"]) for k in items] == [
        ("chat", "c1"), ("chat_deleted", "c1")]
    assert len(await store.hgetall("r", "timeline:chat")) == 2


async def test_the_ring_is_bounded_and_says_what_it_lost(store: Store, bus: Bus) -> None:
    timeline = Timeline(store, bus, max_events=8)
    for i in range(20):
        await timeline.publish("r", event("stock", sku="mug", remaining=100 - i))
    items, lost_before = await timeline.kept("r")
    assert lost_before == [items[0].wall]
    assert [k.n for k in items] == list(range(13, 21))
    assert [k.event["remaining"] for k in items] == list(range(88, 80, -1))
    assert len(await store.hgetall("r", "timeline:stock")) == 8
    # a recording that started before the oldest kept event may have lost some
    _, truncated = on_recording_clock(items, items[0].wall - 1.0, 60.0, lost_before=lost_before)
    assert truncated
    _, truncated = on_recording_clock(items, items[-1].wall, 60.0, lost_before=lost_before)
    assert not truncated


async def test_a_long_sale_keeps_the_pins(store: Store, bus: Bus) -> None:
    """Stock updates, up to four a second through a sale, have their own ring."""
    timeline = Timeline(store, bus, max_events=8)
    await timeline.publish("r", event("product_pinned", product=PRODUCT))
    await timeline.publish("r", event("sale", sku="mug", stock=100, remaining=100))
    for i in range(30):
        await timeline.publish("r", event("stock", sku="mug", remaining=99 - i))
    await timeline.publish("r", event("product_pinned", product=None))
    items, lost_before = await timeline.kept("r")
    kinds = [k.event["type"] for k in items]
    assert kinds == ["product_pinned", "sale", *["stock"] * 8, "product_pinned"]
    assert [k.event["remaining"] for k in items if k.event["type"] == "stock"] == list(
        range(77, 69, -1))
    assert len(lost_before) == 1  # the stock ring's, not the pins'


async def test_closing_the_room_frees_its_timeline(store: Store, bus: Bus) -> None:
    timeline = Timeline(store, bus)
    await store.create_room("gone")
    await store.create_room("stays")
    for room in ("gone", "stays"):
        await timeline.publish(room, event("product_pinned", product=PRODUCT))
    await store.delete_room("gone")
    assert await store.drop_room_data("gone") >= 2  # the ring and its counter
    assert await timeline.kept("gone") == ([], [])
    assert len((await timeline.kept("stays"))[0]) == 1
    # a room re-created under the name starts a new timeline from 1
    await store.create_room("gone")
    await timeline.publish("gone", event("sold_out", sku="mug"))
    assert [k.n for k in (await timeline.kept("gone"))[0]] == [1]


# --- on the recording's clock (pure) -------------------------------------------------------


def test_events_go_on_the_recording_clock() -> None:
    start = 1_000_000.0
    items = [
        kept(1, start + 10.0, "product_pinned", product=PRODUCT),
        kept(2, start + 12.5, "sale", sku="mug", stock=5, remaining=5),
        kept(3, start + 20.0, "product_pinned", product=None),
        kept(4, start + 31.0, "sold_out", sku="mug"),  # after the recording's end
    ]
    events, truncated = on_recording_clock(items, start, 30.0)
    assert not truncated
    assert [(e["t"], e["type"]) for e in events] == [
        (10.0, "product_pinned"), (12.5, "sale"), (20.0, "product_unpinned")]
    assert events[0]["product"] == PRODUCT and events[1]["remaining"] == 5
    assert events[2]["product"] is None


def test_what_was_on_screen_at_the_start_comes_first_at_zero() -> None:
    start = 500.0
    other = {**PRODUCT, "sku": "cup", "title": "Cup"}
    items = [
        kept(1, 100.0, "product_pinned", product=other),
        kept(2, 110.0, "sale", sku="cup", stock=9, remaining=9),
        kept(3, 120.0, "stock", sku="cup", remaining=7),
        kept(4, 200.0, "product_pinned", product=PRODUCT),
        kept(5, 210.0, "sale", sku="mug", stock=5, remaining=5),
        kept(6, 220.0, "stock", sku="mug", remaining=2),
        kept(7, 230.0, "stock", sku="cup", remaining=6),
        kept(8, 505.0, "sold_out", sku="mug"),
    ]
    events, _ = on_recording_clock(items, start, 60.0)
    at_start = [e for e in events if e.get("at_start")]
    assert [(e["type"], e.get("sku")) for e in at_start] == [
        ("product_pinned", None), ("sale", "mug"), ("stock", "mug"), ("stock", "cup")]
    assert at_start[0]["product"] == PRODUCT and all(e["t"] == 0.0 for e in at_start)
    assert at_start[2]["remaining"] == 2
    assert [(e["t"], e["type"]) for e in events if not e.get("at_start")] == [(5.0, "sold_out")]


def test_a_deleted_chat_message_is_never_replayed() -> None:
    items = [kept(1, 11.0, "chat", id="a", text="fine"),
             kept(2, 12.0, "chat", id="b", text="spam"),
             kept(3, 40.0, "chat_deleted", id="b")]  # deleted after the recording ended
    events, _ = on_recording_clock(items, 10.0, 5.0)
    assert [(e["t"], e["type"], e["text"]) for e in events] == [(1.0, "chat", "fine")]


def test_an_unpin_before_the_start_leaves_no_card_at_zero() -> None:
    items = [kept(1, 1.0, "product_pinned", product=PRODUCT),
             kept(2, 2.0, "product_pinned", product=None)]
    events, _ = on_recording_clock(items, 10.0, 5.0)
    assert [(e["t"], e["type"]) for e in events] == [(0.0, "product_unpinned")]


# --- the page's pure function, in node --------------------------------------------------------


def run_js(script: str) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run ./dev setup")
    module = (WEB / "js" / "replay_timeline.js").as_uri()
    code = f'import * as tl from "{module}";\n{script}'
    done = subprocess.run([node, "--input-type=module", "-e", code], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


TIMELINE = [
    {"t": 10.0, "type": "product_pinned", "product": PRODUCT},
    {"t": 12.5, "type": "sale", "sku": "mug", "stock": 5, "remaining": 5, "ends_at_ms": 9e12},
    {"t": 14.0, "type": "stock", "sku": "mug", "remaining": 3},
    {"t": 20.0, "type": "product_unpinned", "product": None},
    {"t": 25.0, "type": "product_pinned", "product": {**PRODUCT, "sku": "cup", "title": "Cup"}},
    {"t": 27.0, "type": "product_pinned", "product": {**PRODUCT, "sku": "hat", "title": "Hat"}},
]


def test_cards_at_time_t() -> None:
    times = [0, 9.99, 10, 12, 13, 15, 19.9, 20, 22, 26, 28]
    script = f"""
      const events = {json.dumps(TIMELINE)};
      console.log(JSON.stringify({json.dumps(times)}.map((t) => tl.cardsAt(events, t))));"""
    at = dict(zip(times, run_js(script), strict=True))
    for t in (0, 9.99, 20, 22):
        assert at[t] == [], t
    for t in (10, 12, 13, 15, 19.9):
        assert [c["product"]["sku"] for c in at[t]] == ["mug"], t
        assert at[t][0]["since"] == 10
    assert at[12][0]["sale"] is None
    assert at[13][0]["sale"]["remaining"] == 5
    assert at[15][0]["sale"]["remaining"] == 3
    assert [(c["product"]["sku"], c["since"], c["sale"]) for c in at[26]] == [("cup", 25, None)]
    assert [(c["product"]["sku"], c["since"]) for c in at[28]] == [("hat", 27)]


def test_chat_at_time_t() -> None:
    chat = [{"t": float(i), "type": "chat", "id": f"m{i}", "text": str(i)} for i in range(10)]
    script = f"""
      const events = {json.dumps([*TIMELINE, *chat])}.sort((a, b) => a.t - b.t);
      console.log(JSON.stringify([tl.chatAt(events, 4.5, 3), tl.chatAt(events, 0.5),
                                  tl.chatAt(events, -1)].map((l) => l.map((m) => m.id))));"""
    assert run_js(script) == [["m2", "m3", "m4"], ["m0"], []]


def test_sale_state_decides_the_buy_button() -> None:
    sale = {"sku": "mug", "remaining": 2, "ends_at_ms": 2000}
    script = f"""
      const sale = {json.dumps(sale)};
      console.log(JSON.stringify([
        tl.saleState(sale, "mug", 1000), tl.saleState(sale, "mug", 2000),
        tl.saleState({{...sale, remaining: 0}}, "mug", 1000), tl.saleState(sale, "cup", 1000),
        tl.saleState(null, "mug", 1000)]));"""
    assert run_js(script) == ["open", "ended", "sold_out", "not_on_sale", "not_on_sale"]


# --- GET /api/v1/recordings/{id}/timeline, both backends ------------------------------------

ROOM = "tl"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    config.timeline_chat = True  # --timeline-chat: replays show chat (off by default)
    return config


async def recorded_room(server: Server, started_ago_s: float, finished: bool = False
                        ) -> tuple[Api, str]:
    """A room with a product, and a recording of it in the index that started
    ``started_ago_s`` ago; the admin API and the recording's id."""
    admin = Api(server.url, server.token("*", "host", "admin"))
    assert (await admin.post("/api/v1/rooms", {"name": ROOM}))[0] == 201
    assert (await admin.post(f"/api/v1/rooms/{ROOM}/products",
                             {"sku": "mug", "title": "Mug", "price": 1200}))[0] == 201
    recording_id = new_recording_id()
    await server.app[RECORDINGS_KEY].put(RecordingMeta(
        recording_id, ROOM, "test", time.time() - started_ago_s, 0.0, finished=finished))
    return admin, recording_id


async def test_rest_commerce_lands_on_the_recording_clock(server: Server) -> None:
    admin, recording_id = await recorded_room(server, 2.0)
    room = f"/api/v1/rooms/{ROOM}"
    assert (await admin.post(room + "/pin", {"sku": "mug"}))[0] == 200
    assert (await admin.post(room + "/sales", {"sku": "mug", "stock": 1, "duration_s": 60}))[0] \
        == 201
    buyer = Api(server.url, server.token(ROOM, "bob", "subscribe"))
    status, _ = await buyer.post(room + "/orders", {"sku": "mug"},
                                 headers={"Idempotency-Key": "k1"})
    assert status == 201
    await asyncio.sleep(0.6)  # the coalesced stock event goes out within 250 ms
    assert (await admin.delete(room + "/pin"))[0] == 200
    status, body = await buyer.get(f"/api/v1/recordings/{recording_id}/timeline")
    assert status == 200, body
    assert body["recording"] == recording_id and body["room"] == ROOM
    assert body["truncated"] is False and body["finished"] is False
    assert [e["type"] for e in body["events"]] == [
        "product_pinned", "sale", "sold_out", "stock", "product_unpinned"]
    ts = [e["t"] for e in body["events"]]
    assert ts == sorted(ts) and 1.5 <= ts[0] and ts[-1] <= body["duration_s"] < 10.0
    assert body["events"][0]["product"]["sku"] == "mug"
    assert body["events"][1]["sku"] == "mug" and body["events"][1]["stock"] == 1
    # the media's own ways in: ?token= too (a <video> page), an admin of the room
    plain = Api(server.url)
    viewer_token = server.token(ROOM, "bob", "subscribe")
    status, again = await plain.get(
        f"/api/v1/recordings/{recording_id}/timeline?token={viewer_token}")
    assert status == 200 and again["events"] == body["events"]
    room_admin = Api(server.url, server.token(ROOM, "host", "admin"))
    assert (await room_admin.get(f"/api/v1/recordings/{recording_id}/timeline"))[0] == 200


async def test_bad_timeline_requests_get_json_errors(server: Server) -> None:
    admin, recording_id = await recorded_room(server, 5.0, finished=True)
    assert (await admin.post(f"/api/v1/rooms/{ROOM}/pin", {"sku": "mug"}))[0] == 200
    timeline = server.app[SIGNALING_KEY].live.timeline
    before = await timeline.kept(ROOM)
    path = f"/api/v1/recordings/{recording_id}/timeline"
    other = Api(server.url, server.token("elsewhere", "eve", "subscribe"))
    chat_only = Api(server.url, server.token(ROOM, "carl", "chat"))
    viewer = Api(server.url, server.token(ROOM, "bob", "subscribe"))
    cases = [
        (Api(server.url), path, 401),
        (Api(server.url, "not-a-token"), path, 401),
        (other, path, 403),
        (chat_only, path, 403),
        (viewer, "/api/v1/recordings/R_0123456789abcdef/timeline", 404),
        (viewer, "/api/v1/recordings/..%2F..%2Fetc/timeline", 404),
        (viewer, "/api/v1/recordings/" + "x" * 300 + "/timeline", 404),
    ]
    for api, url, expected in cases:
        status, body = await api.get(url)
        assert status == expected, (url, body)
        assert isinstance(body, dict) and body["error"]["code"], body
    assert await timeline.kept(ROOM) == before  # a refusal changes nothing
    status, body = await viewer.get(path)  # and the server keeps serving
    assert status == 200 and [e["type"] for e in body["events"]] == []  # pinned after its end


async def test_a_timeline_over_its_bound_is_truncated_and_says_so(server: Server) -> None:
    _, recording_id = await recorded_room(server, 30.0)
    timeline = server.app[SIGNALING_KEY].live.timeline
    timeline.max_events = 16
    now = time.time()
    for i in range(40):
        await timeline.keep(ROOM, Event(ROOM, i + 1, {"type": "stock", "sku": "mug",
                                                      "remaining": 100 - i}),
                            now - 20.0 + i * 0.1)
    viewer = Api(server.url, server.token(ROOM, "bob", "subscribe"))
    status, body = await viewer.get(f"/api/v1/recordings/{recording_id}/timeline")
    assert status == 200 and body["truncated"] is True
    assert [e["remaining"] for e in body["events"]] == list(range(76, 60, -1))


async def test_replayed_chat_leaves_out_what_moderators_deleted(server: Server) -> None:
    admin, recording_id = await recorded_room(server, 1.0)
    chat = server.app[SIGNALING_KEY].live.chat
    who = Claims(identity="ann", room=ROOM, grants=frozenset({Grant.CHAT}), name="Ann")
    kept_message = await chat.send(ROOM, who, "hello <b>show</b>")
    spam = await chat.send(ROOM, who, "spam")
    assert (await admin.delete(f"/api/v1/rooms/{ROOM}/chat/{spam['id']}"))[0] == 204
    viewer = Api(server.url, server.token(ROOM, "bob", "subscribe"))
    status, body = await viewer.get(f"/api/v1/recordings/{recording_id}/timeline")
    assert status == 200, body
    assert [(e["type"], e["id"], e["text"], e["name"]) for e in body["events"]] == [
        ("chat", kept_message["id"], "hello <b>show</b>", "Ann")]


async def test_a_recording_keeps_its_timeline_when_its_room_closes(server: Server) -> None:
    admin, recording_id = await recorded_room(server, 1.0)
    index = server.app[RECORDINGS_KEY]
    meta = await index.get(recording_id)
    assert meta is not None
    meta.finished, meta.duration_s = True, 30.0
    await index.put(meta)
    room = f"/api/v1/rooms/{ROOM}"
    assert (await admin.post(room + "/pin", {"sku": "mug"}))[0] == 200
    assert (await admin.delete(room + "/pin"))[0] == 200
    viewer = Api(server.url, server.token(ROOM, "bob", "subscribe"))
    path = f"/api/v1/recordings/{recording_id}/timeline"
    status, before = await viewer.get(path)
    assert status == 200
    assert [e["type"] for e in before["events"]] == ["product_pinned", "product_unpinned"]

    assert (await admin.delete(room))[0] == 204  # its data goes, its recording's part stays
    timeline = server.app[SIGNALING_KEY].live.timeline
    assert await timeline.kept(ROOM) == ([], [])
    status, after = await viewer.get(path)
    assert status == 200 and after["events"] == before["events"], after
    assert after["truncated"] is False

    # a room re-created under the name, with a show of its own, changes nothing of it
    assert (await admin.post("/api/v1/rooms", {"name": ROOM}))[0] == 201
    assert (await admin.post(room + "/products", {"sku": "cup", "title": "Cup", "price": 1}))[0] \
        == 201
    assert (await admin.post(room + "/pin", {"sku": "cup"}))[0] == 200
    assert (await admin.delete(room))[0] == 204
    assert (await viewer.get(path))[1]["events"] == before["events"]

    # and it goes with the recording
    store = server.app[SIGNALING_KEY].store
    assert await store.hget("_recordings", "timeline", recording_id) is not None
    assert (await admin.delete(f"/api/v1/recordings/{recording_id}"))[0] == 204
    assert await store.hget("_recordings", "timeline", recording_id) is None
    assert (await viewer.get(path))[0] == 404
