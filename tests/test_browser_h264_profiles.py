"""Chromium's anchor page publishing H.264 Main (forced with setCodecPreferences, as a page
that wants better compression would) plays at a Chromium viewer, which is offered Main too.

Debian's Chromium sends H.264 as 42001f, 42e01f and 4d001f (no High: its encoder is
OpenH264); High from an encoder is covered by tests/test_gstreamer_whip.py."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from test_browser import collect_errors, page_url, wait_frames, wait_state
from waiting import wait_for

from sfu.codecs import describe
from sfu.node import NODE_KEY

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

    from tests.conftest import Server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Runs before the page's scripts: whatever list the page passes to setCodecPreferences, video
# keeps only H.264 of the wanted profile_idc in packetization-mode 1 (and RTX).
FORCE_PROFILE = """
(() => {
  const idc = "%s";
  const original = RTCRtpTransceiver.prototype.setCodecPreferences;
  RTCRtpTransceiver.prototype.setCodecPreferences = function (codecs) {
    if (codecs.some((c) => c.mimeType.toLowerCase().startsWith("video/"))) {
      codecs = codecs.filter((c) => {
        const mime = c.mimeType.toLowerCase();
        const fmtp = (c.sdpFmtpLine || "").toLowerCase();
        if (mime === "video/rtx") return true;
        return mime === "video/h264" && fmtp.includes("profile-level-id=" + idc)
          && fmtp.includes("packetization-mode=1");
      });
      if (!codecs.some((c) => c.mimeType.toLowerCase() === "video/h264"))
        throw new Error("this browser cannot send H.264 profile " + idc);
    }
    return original.call(this, codecs);
  };
})();
"""

SENT_CODEC = """async () => {
  const stats = await window.shopcast.pc.getStats();
  let out = null;
  stats.forEach((r) => {
    if (r.type === "outbound-rtp" && r.kind === "video" && r.codecId) {
      const codec = stats.get(r.codecId);
      out = {mimeType: codec.mimeType, fmtp: codec.sdpFmtpLine || "", frames: r.framesEncoded};
    }
  });
  return out;
}"""


def h264_profile_level_ids(description: str) -> set[str]:
    pts = re.findall(r"a=rtpmap:(\d+) H264/90000", description)
    return {m for pt in pts for m in re.findall(
        rf"a=fmtp:{pt} \S*profile-level-id=([0-9a-fA-F]{{6}})", description)}


async def test_chromium_publishing_main_plays_at_a_chromium_viewer(
    server: Server, chromium: BrowserContext
) -> None:
    errors: list[str] = []
    room = "main-profile"
    anchor = await chromium.new_page()
    collect_errors(anchor, "anchor", errors)
    await anchor.add_init_script(FORCE_PROFILE % "4d")
    await anchor.goto(page_url(server, "anchor", room, server.token(room, "anchor", "publish"),
                               autostart="1"))
    await wait_state(anchor, "connected")

    offer = await anchor.evaluate("window.shopcast.pc.localDescription.sdp")
    answer = await anchor.evaluate("window.shopcast.pc.remoteDescription.sdp")
    assert h264_profile_level_ids(offer) == {"4d001f"}, offer
    assert h264_profile_level_ids(answer) == {"4d001f"}, answer
    node = server.app[NODE_KEY]
    await wait_for(lambda: room in node.rooms and node.rooms[room].live, 10, "room live")
    video = next(p for p in node.rooms[room].producers() if p.kind == "video")
    assert describe(video.codec) == "H.264 Main"

    viewer = await chromium.new_page()
    collect_errors(viewer, "viewer", errors)
    await viewer.goto(page_url(server, "viewer", room, server.token(room, "v", "subscribe")))
    stats = await wait_frames(viewer, minimum=30)
    assert stats["frameWidth"] > 0 and stats["frameHeight"] > 0
    offered_to_viewer = await viewer.evaluate("window.shopcast.pc.remoteDescription.sdp")
    assert h264_profile_level_ids(offered_to_viewer) == {"4d001f"}, offered_to_viewer

    sent = await anchor.evaluate(SENT_CODEC)
    assert sent is not None and sent["mimeType"].lower() == "video/h264", sent
    assert "profile-level-id=4d001f" in sent["fmtp"] and sent["frames"] > 30, sent
    assert errors == []
