"""Commerce events in step with the picture, as a viewer sees them.

A painted anchor (loadtest.media: each frame shows its capture time and number) is live; an
admin pins a product over REST at a known moment, that is in a known frame of the anchor. Each
viewer page (the real viewer page in headless Chromium, on FLV and on WebRTC) is watched for
the product card: when the card changes, the page reads the painted strip of the frame on
screen at that moment (canvas readback of the <video>). The offset is that frame's painted time
minus the painted time of the frame the anchor's track was at when the pin was clicked: 0 means
the card appeared with the very frame in which the anchor pinned it; -900 would mean a card
0.9 s ahead of the picture (what a viewer 0.9 s behind saw before).

``python -m loadtest.commerce_sync`` starts its own ``shopcast serve`` and Chromium, pins
``--pins`` products, prints the offsets per transport and writes a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import numpy as np

from loadtest.media import (
    FPS,
    FRAME_MOD,
    TIME_MOD,
    VIDEO_CLOCK,
    PaintedVideoTrack,
    decode_bits,
    now_ms,
)
from loadtest.stats import write_report

CARD_TIMEOUT_S = 8.0
MAX_PINS = 100
MAX_KEPT_FRAMES = 1800  # a minute at 30 fps
TTL_S = 3600
# Installs window.__cards (one entry per card change: title, wall ms, the strip's 64 block
# lumas of the frame on screen) and window.__readStrip() (the same lumas, now).
PROBE_JS = """() => {
  if (window.__cards) return;
  window.__cards = [];
  window.__seeks = 0;  // the player jumped ahead (mpegts.js chasing its live latency)
  const video = document.getElementById("video");
  video.addEventListener("seeking", () => { window.__seeks += 1; });
  const card = document.getElementById("product-card");
  const title = document.getElementById("product-title");
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 64;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  window.__readStrip = () => {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return null;
    ctx.drawImage(video, 0, 0, w, h * 64 / 360, 0, 0, 640, 64);
    const px = ctx.getImageData(0, 0, 640, 64).data;
    const means = [];
    for (let r = 0; r < 2; r++) for (let c = 0; c < 32; c++) {
      let sum = 0, n = 0;
      for (let y = r * 32 + 6; y < r * 32 + 26; y++) {  // each block's centre (loadtest.media)
        for (let x = c * 20 + 4; x < c * 20 + 16; x++) {
          const i = (y * 640 + x) * 4;
          sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2]; n++;
        }
      }
      means.push(sum / n);
    }
    return means;
  };
  let last = "";
  new MutationObserver(() => {
    const shown = card.hidden ? "" : title.textContent;
    if (shown && shown !== last) {
      const sync = window.shopcastLive && window.shopcastLive.sync;
      window.__cards.push({ title: shown, at: Date.now(), means: window.__readStrip(),
                            seeks: window.__seeks, released: sync ? sync.released : null });
    }
    last = shown;
  }).observe(card, { attributes: true, childList: true, characterData: true, subtree: true });
}"""


def read_strip(means: list[float] | None) -> tuple[int, int] | None:
    """(capture_ms, frame_no) painted in the frame whose strip lumas are ``means``."""
    if not means or len(means) != 64:
        return None
    return decode_bits((np.array(means) >= 127.5).astype(np.uint8))


def signed_ms(a: int, b: int) -> int:
    """a - b for painted times (mod 2**40)."""
    return (a - b + TIME_MOD // 2) % TIME_MOD - TIME_MOD // 2


class CapturedTrack(PaintedVideoTrack):
    """The painted anchor track stamped like a camera: each frame's timestamp is its capture
    time (PaintedVideoTrack counts frames, a clock a starved machine slows down, while a
    browser's RTP clock is the wall clock whatever the frame rate); it remembers when it
    painted each of its last frames, the pinned frame's own time."""

    def __init__(self) -> None:
        super().__init__()
        self.captured: dict[int, int] = {}  # frame number -> painted-clock ms
        self._started: float | None = None
        self._last_pts = -1

    async def recv(self) -> Any:
        frame = await super().recv()
        now = time.monotonic()
        if self._started is None:
            self._started = now
        self._last_pts = max(self._last_pts + 1, round((now - self._started) * VIDEO_CLOCK))
        frame.pts = self._last_pts
        self.captured[self.frame_no] = now_ms()
        if len(self.captured) > MAX_KEPT_FRAMES:
            del self.captured[next(iter(self.captured))]
        return frame


async def page_behind_ms(page: Any) -> int | None:
    """How far the page's picture is behind the anchor right now (glass to glass)."""
    read = read_strip(await page.evaluate("window.__readStrip()"))
    return None if read is None else signed_ms(now_ms(), read[0])


async def wait_card(page: Any, seen: int, title: str) -> dict[str, Any]:
    deadline = time.monotonic() + CARD_TIMEOUT_S
    while time.monotonic() < deadline:
        cards: list[dict[str, Any]] = await page.evaluate("window.__cards")
        fresh = [c for c in cards[seen:] if c["title"] == title]
        if fresh:
            return fresh[0]
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no card {title!r} within {CARD_TIMEOUT_S} s")


class Pins:
    """Adds ``count`` products, then pins them one by one over REST, recording each pin's
    wall time (painted-clock ms) and the anchor's frame number then."""

    def __init__(self, http: aiohttp.ClientSession, url: str, room: str, admin: str) -> None:
        self.http = http
        self.api = f"{url}/api/v1/rooms/{room}"
        self.headers = {"Authorization": f"Bearer {admin}"}

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        async with self.http.post(self.api + path, json=body, headers=self.headers) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"POST {path}: {resp.status} {await resp.text()}")

    async def add(self, count: int) -> list[str]:
        titles = [f"Product {i}" for i in range(count)]
        for i, title in enumerate(titles):
            await self._post("/products", {"sku": f"p{i}", "title": title, "price": 100 + i})
        return titles

    async def pin(self, index: int) -> tuple[int, int]:
        """Pin product ``index``: the painted-clock ms of the click, and how long the request
        took (what the server's answer added to the pin's time)."""
        clicked = now_ms()
        await self._post("/pin", {"sku": f"p{index}"})
        return clicked, signed_ms(now_ms(), clicked)


async def measure(pages: dict[str, Any], pins: Pins, count: int, gap_s: float,
                  track: CapturedTrack) -> dict[str, list[dict[str, Any]]]:
    """Pins ``count`` products ``gap_s`` apart; per page, one row per pin: the offset of the
    frame on screen when its card appeared from the pin's frame (the frame the anchor's track
    was at when the pin was clicked), in ms of their painted times, in frames, and in frames at
    the nominal frame rate (painted times spread when a busy machine stalls the anchor)."""
    titles = await pins.add(count)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in pages}
    for i, title in enumerate(titles):
        seen = {name: len(await page.evaluate("window.__cards")) for name, page in pages.items()}
        seeks = {name: await page.evaluate("window.__seeks") for name, page in pages.items()}
        behind = {name: await page_behind_ms(page) for name, page in pages.items()}
        frame = next(reversed(track.captured), None)  # the anchor's newest painted frame
        clicked, request_ms = await pins.pin(i)
        pinned_at = None if frame is None else track.captured.get(frame)
        for name, page in pages.items():
            card = await wait_card(page, seen[name], title)
            read = read_strip(card["means"])
            frames = None if read is None or frame is None else (
                (read[1] - frame + FRAME_MOD // 2) % FRAME_MOD - FRAME_MOD // 2)
            rows[name].append({
                "pin": i, "pin_frame": frame, "frame": None if read is None else read[1],
                "behind_ms": behind[name], "request_ms": request_ms,
                "seeked": card["seeks"] > seeks[name],  # the picture jumped past the pin
                "released": card["released"],  # the stamp, the clock reading, the wait
                "card_after_ms": signed_ms(card["at"] % TIME_MOD, clicked),
                "offset_ms": None if read is None or pinned_at is None
                else signed_ms(read[0], pinned_at),
                "frames": frames,
                "frame_offset_ms": None if frames is None else round(frames * 1000 / FPS, 1),
            })
        await asyncio.sleep(gap_s)
    return rows


def viewer_url(url: str, room: str, token: str, transport: str) -> str:
    return f"{url}/viewer?" + urlencode({"room": room, "token": token, "transport": transport})


CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--allow-loopback-in-peer-connection",
                 "--autoplay-policy=no-user-gesture-required")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from loadtest.clients import publish
    from loadtest.media import ToneAudioTrack
    from loadtest.soak_procs import Server
    from loadtest.stats import mint_token, percentiles

    secret = secrets.token_urlsafe(32)
    folder = Path(tempfile.mkdtemp(prefix="shopcast-sync-"))
    server = Server(secret, "", 0, folder / "serve.log")
    room = "sync"
    track = CapturedTrack()
    try:
        anchor = await publish(server.url, room, mint_token(secret, room, "anchor", ["publish"],
                                                            TTL_S), track, ToneAudioTrack())
        try:
            async with async_playwright() as pw, aiohttp.ClientSession() as http:
                context = await pw.chromium.launch_persistent_context(
                    str(folder / "chromium"), executable_path=args.chromium, headless=True,
                    args=list(CHROMIUM_ARGS))
                admin = mint_token(secret, room, "admin", ["admin"], TTL_S)
                rows = {}
                for transport in args.transports.split(","):  # one page at a time: a
                    page = await context.new_page()  # background tab's timers are throttled
                    token = mint_token(secret, room, f"viewer-{transport}", ["subscribe"], TTL_S)
                    await page.goto(viewer_url(server.url, room, token, transport))
                    await page.evaluate(PROBE_JS)
                    await asyncio.sleep(args.warmup_s)
                    rows.update(await measure({transport: page}, Pins(http, server.url, room,
                                                                      admin),
                                              args.pins, args.gap_s, track))
                    await page.close()
                await context.close()
        finally:
            await anchor.close()
    finally:
        server.stop()
    summary = {}
    for name, items in rows.items():
        offsets = [r["offset_ms"] for r in items if r["offset_ms"] is not None]
        steady = [r["offset_ms"] for r in items if r["offset_ms"] is not None and not r["seeked"]]
        summary[name] = {
            "offset_ms": percentiles([abs(o) for o in offsets]),
            "offsets_ms": offsets,
            "offset_ms_without_seeks": percentiles([abs(o) for o in steady]),
            "seeked": sum(1 for r in items if r["seeked"]),
            "behind_ms": percentiles([r["behind_ms"] for r in items
                                      if r["behind_ms"] is not None], (50,)),
            "card_after_pin_ms": percentiles([r["card_after_ms"] for r in items], (50,)),
        }
        print(f"{name}: offsets {offsets} ms; |offset| {summary[name]['offset_ms']}; "
              f"pins whose picture jumped ahead: {summary[name]['seeked']}; "
              f"page behind the anchor {summary[name]['behind_ms']}", flush=True)
    return {"pins": args.pins, "gap_s": args.gap_s, "summary": summary, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.commerce_sync", description=__doc__)
    p.add_argument("--pins", type=int, default=10)
    p.add_argument("--gap-s", type=float, default=2.0, help="pause between pins")
    p.add_argument("--warmup-s", type=float, default=6.0, help="before the first pin")
    p.add_argument("--transports", default="flv,webrtc",
                   help="viewer pages measured, one after the other: flv, webrtc or both")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--out", default="", help="JSON report (default loadtest/reports/...)")
    args = p.parse_args(argv)
    args.pins = max(1, min(args.pins, MAX_PINS))
    if not set(args.transports.split(",")) <= {"flv", "webrtc"}:
        p.error("--transports: flv, webrtc or flv,webrtc")
    report = asyncio.run(run(args))
    print("report:", write_report(report, args.out, "commerce-sync"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
