"""Commerce events in step with the picture: the room's media clock on the node
(sfu/media_clock.py), the stamp on commerce events (signaling/live/media_time.py, both
backends) and the page's hold (web/js/media_sync.js, in node)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest

from sfu.flv.timeline import Timeline as FlvTimeline
from sfu.media_clock import MAX_DRIFT_MS, REFRESH_S, RoomMediaClocks, drifted, sample
from sfu.producer import NTP_EPOCH_OFFSET
from signaling.bus import Bus
from signaling.claims import Claims, Grant
from signaling.live.catalog import Catalog, Product
from signaling.live.gateway import EventGateway
from signaling.live.gifts import Gifts
from signaling.live.media_time import (
    KEY,
    MAX_AGE_MS,
    ClockAnchor,
    MediaTimes,
    clock_sink,
    load_clock,
    save_clock,
)
from signaling.live.sales import Sales
from signaling.live.schema import event
from signaling.live.timeline import Timeline
from signaling.store import Store
from signaling.webhooks import Webhooks, WebhookSettings

pytest_plugins = ["store_fixtures"]  # backend, store, bus: memory and redis

WEB_JS = Path(__file__).parent.parent / "web" / "js"
NOW = 1_700_000_000.0  # unix seconds


# --- the node's clock ----------------------------------------------------------------------


def test_anchor_extrapolates_both_clocks_and_wraps_rtp() -> None:
    anchor = ClockAnchor(wall_ms=1000, flv_ms=5000, rtp=0xFFFFFF00)
    assert anchor.at(1000) == {"flv_ms": 5000, "rtp": 0xFFFFFF00}
    later = anchor.at(1500)
    assert later["flv_ms"] == 5500
    assert later["rtp"] == (0xFFFFFF00 + 45_000) & 0xFFFFFFFF  # 500 ms at 90 kHz, wrapped
    assert anchor.at(0)["flv_ms"] == 4000


def _output(rtp0: int, arrived: float) -> Any:
    """An FLV output whose video track mapped ``rtp0`` to ``arrived`` (unix s), as the real
    timeline does before the publisher's first sender report; its epoch is that frame."""
    timeline = FlvTimeline()
    ntp = NTP_EPOCH_OFFSET + arrived
    report = ((int(ntp) << 32) | int((ntp % 1) * (1 << 32)), rtp0)
    clock = timeline.track(90_000, lambda: report, lambda: False, lambda: True)
    assert clock.ms(rtp0) == 0  # the room's first frame: FLV time 0
    video = SimpleNamespace(last_timestamp=rtp0, packets=1)
    return SimpleNamespace(video_clock=clock, video=video, timeline=timeline, live=True)


def test_sample_names_the_newest_frame_with_its_flv_time() -> None:
    """The sample pairs the newest video timestamp on the wire with the FLV time the output
    gives that frame: the two clocks of the anchor name the same picture at that moment."""
    output = _output(rtp0=0xFFFF0000, arrived=NOW)
    output.video.last_timestamp = (0xFFFF0000 + 225_000) & 0xFFFFFFFF  # 2.5 s on, wrapped
    anchor = sample(output, NOW + 2.5)
    assert anchor == ClockAnchor(round((NOW + 2.5) * 1000), 2500, (0xFFFF0000 + 225_000)
                                 & 0xFFFFFFFF)
    late = sample(output, NOW + 2.6)  # what arrives names the frame, not the wall clock
    assert late is not None and (late.flv_ms, late.rtp) == (anchor.flv_ms, anchor.rtp)


def test_no_sample_without_a_video_clock_or_before_the_first_frame() -> None:
    output = _output(rtp0=1, arrived=NOW)
    assert sample(SimpleNamespace(**{**vars(output), "video_clock": None}), NOW) is None
    assert sample(SimpleNamespace(**{**vars(output), "video": None}), NOW) is None  # RTMP
    assert sample(SimpleNamespace(**{**vars(output), "timeline": FlvTimeline()}), NOW) is None
    assert sample(SimpleNamespace(**{**vars(output), "live": False}), NOW) is None
    output.video.packets = 0
    assert sample(output, NOW) is None


def test_drift_is_measured_on_both_clocks() -> None:
    published = ClockAnchor(0, 1000, 0)
    assert not drifted(published, ClockAnchor(5000, 6000 + MAX_DRIFT_MS, 450_000))
    assert drifted(published, ClockAnchor(5000, 6000 + MAX_DRIFT_MS + 1, 450_000))
    assert drifted(published, ClockAnchor(5000, 6000, 450_000 + 90 * (MAX_DRIFT_MS + 1)))
    assert not drifted(ClockAnchor(0, 0, 0xFFFFFFFF), ClockAnchor(1, 1, 89))  # wraps


async def test_clocks_publish_on_go_live_every_refresh_and_on_a_jump() -> None:
    sent: list[tuple[str, ClockAnchor]] = []

    async def sink(room: str, anchor: ClockAnchor) -> None:
        sent.append((room, anchor))

    output = _output(rtp0=0, arrived=NOW)
    flv = SimpleNamespace(outputs={"r": output})
    clocks = RoomMediaClocks(flv, sink)  # type: ignore[arg-type]

    async def frame_at(seconds: float, drift_ms: int = 0) -> int:
        """A frame that arrives ``seconds`` after the first (late by ``drift_ms``)."""
        output.video.last_timestamp = round(seconds * 90_000) - drift_ms * 90
        output.video.packets += 1
        return await clocks.tick(NOW + seconds)

    assert await frame_at(1) == 1  # go-live
    assert await frame_at(2) == 0  # on course: nothing new
    assert await clocks.tick(NOW + 2.5) == 0  # no packet since: nothing sampled
    assert await frame_at(1 + REFRESH_S) == 1  # the refresh
    assert await frame_at(2 + REFRESH_S, drift_ms=MAX_DRIFT_MS // 2) == 0
    assert await frame_at(3 + REFRESH_S, drift_ms=MAX_DRIFT_MS + 10) == 1  # frames came slow
    assert [a.flv_ms for _, a in sent] == [1000, 1000 + round(REFRESH_S * 1000),
                                           3000 + round(REFRESH_S * 1000) - MAX_DRIFT_MS - 10]
    del flv.outputs["r"]
    assert await clocks.tick(NOW + 10) == 0
    assert clocks.published == {} and clocks.sent == 3


# --- the stamp, both backends --------------------------------------------------------------

PRODUCT = Product("mug", "Mug", 1200, "USD")


def stamped_publisher(store: Store, bus: Bus, at: float) -> MediaTimes:
    return MediaTimes(store, Timeline(store, bus), clock=lambda: at)


async def test_commerce_events_carry_the_media_time_chat_does_not(store: Store,
                                                                  bus: Bus) -> None:
    await store.create_room("r")
    await clock_sink(store)("r", ClockAnchor(round(NOW * 1000), 40_000, 1_000_000))
    media = stamped_publisher(store, bus, NOW + 0.25)
    catalog = Catalog(store, media)
    await catalog.put("r", PRODUCT)
    await catalog.pin("r", "mug")
    sales = Sales(store, media, Webhooks(WebhookSettings()), catalog, 250)
    await sales.start("r", "mug", 5, 0, 60)
    await Gifts(store, media).send("r", Claims("fan", "r", frozenset({Grant.SUBSCRIBE})), "rose")
    await media.publish("r", event("chat", id="c1", identity="fan", name="Fan", text="hi",
                                   ts=1))
    await catalog.pin("r", None)
    history = await bus.history("r")
    expected = {"flv_ms": 40_250, "rtp": 1_000_000 + 22_500}
    by_type = {e.type: e.data for e in history}
    for kind in ("product_pinned", "sale", "gift"):
        assert by_type[kind]["media"] == expected, kind
    assert "media" not in by_type["chat"]
    unpinned = {k: v for k, v in history[-1].data.items() if k != "seq"}
    assert unpinned == {"type": "product_pinned", "product": None, "media": expected}
    kept, _ = await Timeline(store, bus).kept("r")
    assert kept[0].event["media"] == expected  # the recording's timeline keeps it too
    assert media.stamped == 4 and media.unstamped == 0


async def test_no_fresh_clock_no_stamp(store: Store, bus: Bus) -> None:
    await store.create_room("r")
    media = stamped_publisher(store, bus, NOW)
    await media.publish("r", event("sold_out", sku="mug"))  # no publisher: no clock
    await save_clock(store, "r", ClockAnchor(round(NOW * 1000) - MAX_AGE_MS - 1, 0, 0))
    await media.publish("r", event("sold_out", sku="mug"))  # its node stopped refreshing
    await store.put("r", KEY, msgpack.packb({"not": "an anchor"}))
    assert await load_clock(store, "r") is None
    await media.publish("r", event("sold_out", sku="mug"))
    assert [sorted(e.data) for e in await bus.history("r")] == [["seq", "sku", "type"]] * 3
    assert media.unstamped == 3


# --- the page's hold (node) ----------------------------------------------------------------


def run_node(code: str) -> Any:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed; run ./dev setup")
    module = (WEB_JS / "media_sync.js").as_uri()
    script = f'import {{ MediaSync, waitMs, HOLD_CAP_MS }} from "{module}";\n{code}'
    done = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_wait_compares_flv_or_rtp_and_wraps() -> None:
    out = run_node("""console.log(JSON.stringify([
      waitMs({flv_ms: 5000, rtp: 0}, {flvMs: 4200}),
      waitMs({flv_ms: 5000, rtp: 900}, {rtp: 0}),
      waitMs({flv_ms: 5000, rtp: 45}, {rtp: 4294967295 - 44}),
      waitMs({flv_ms: 5000, rtp: 0}, {rtp: 90}),
      waitMs(undefined, {flvMs: 1}), waitMs({flv_ms: 1, rtp: 1}, null),
      waitMs({rtp: 1}, {flvMs: 1}),
    ]));""")
    assert out == [800, 10, 1, -1, None, None, None]


def test_hold_releases_at_the_frame_in_order_and_keeps_chat_immediate() -> None:
    out = run_node("""
      let t = 0;
      const got = [];
      const sync = new MediaSync((ev) => got.push([ev.type, t]), { now: () => t });
      sync.setReading({ flvMs: 1000 });
      sync.offer({ type: "product_pinned", media: { flv_ms: 1800, rtp: 0 } });
      sync.offer({ type: "stock", media: { flv_ms: 1700, rtp: 0 } }); // waits behind the pin
      sync.offer({ type: "chat" });
      sync.offer({ type: "sold_out" }); // no media: still after what is held, not before
      t = 500; sync.setReading({ flvMs: 1500 });
      t = 700; sync.setReading({ flvMs: 1767 }); // 33 ms to go: the pin's frame is next
      t = 800; sync.setReading({ flvMs: 1768 }); // the frame on screen holds the pin's moment
      sync.offer({ type: "sale", media: { flv_ms: 9000, rtp: 0 } }); // 7 s ahead: no clock of ours
      sync.offer({ type: "gift", media: { flv_ms: 1000, rtp: 0 } }); // already on screen
      console.log(JSON.stringify([got, sync.holds, sync.held.length]));""")
    got, holds, held = out
    assert got == [["chat", 0], ["product_pinned", 800], ["stock", 800], ["sold_out", 800],
                   ["sale", 800], ["gift", 800]]
    assert holds == 3 and held == 0


def test_hold_is_capped_and_a_page_without_clock_shows_at_once() -> None:
    out = run_node("""
      let t = 0;
      const got = [];
      const sync = new MediaSync((ev) => got.push([ev.type, t]), { now: () => t });
      sync.offer({ type: "product_pinned", media: { flv_ms: 1800, rtp: 0 } }); // no clock yet
      sync.setReading({ flvMs: 0 });
      sync.offer({ type: "sale", media: { flv_ms: 4000, rtp: 0 } });
      t = HOLD_CAP_MS - 1; sync.release();
      t = HOLD_CAP_MS; sync.release(); // the picture stalled: shown at the cap
      sync.offer({ type: "stock", media: { flv_ms: 4000, rtp: 0 } });
      sync.offer({ type: "state" }); // a fresh state: what waited goes first
      console.log(JSON.stringify(got));""")
    assert out == [["product_pinned", 0], ["sale", 5000], ["stock", 5000], ["state", 5000]]


async def test_the_gateway_stamps_what_viewers_see(store: Store, bus: Bus) -> None:
    """The event gateway's catalog, sales and gifts publish through the stamp; chat and
    likes do not."""
    gateway = EventGateway(store, bus, Webhooks(WebhookSettings()))
    await store.create_room("r")
    await save_clock(store, "r", ClockAnchor(round(time.time() * 1000), 1000, 5000))
    await gateway.catalog.put("r", PRODUCT)
    await gateway.catalog.pin("r", "mug")
    await gateway.gifts.send("r", Claims("fan", "r", frozenset({Grant.SUBSCRIBE})), "heart")
    history = {e.type: e.data for e in await bus.history("r")}
    for kind in ("product_pinned", "gift"):
        media = history[kind]["media"]
        assert 1000 <= media["flv_ms"] <= 1000 + 5000, media  # a few ms on, on a busy machine
        assert media["rtp"] - 5000 == (media["flv_ms"] - 1000) * 90
    assert gateway.media_times.stamped == 2
