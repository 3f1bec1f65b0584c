"""A WHIP publisher built on GStreamer's webrtcbin, as GStreamer users write one.

Runs with the system Python (PyGObject and GStreamer's introspection data come from Debian
packages, not from the venv). x264enc encodes a live test picture, rtph264pay and webrtcbin
make the offer exactly as webrtcbin writes it (its default fmtp, e.g. 42c01e for
Constrained Baseline), the offer is POSTed once ICE gathering is complete (no trickle), and
the answer is applied. It publishes until ``--seconds`` pass or SIGTERM, then DELETEs its
resource. Progress goes to stdout as JSON lines, for the test that drives it:

    {"event": "offer", "sdp": ...}        the offer as sent
    {"event": "answer", "status": 201, "sdp": ..., "location": ...}
    {"event": "refused", "status": 400, "body": ...}   (then exit status 2)
    {"event": "state", "connection": "connected"}
    {"event": "done", "delete_status": 200}

``--loopback`` makes libnice gather on 127.0.0.1 only (tests stay on loopback); candidates
are the only thing it changes in the offer.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = """
webrtcbin name=webrtc bundle-policy=max-bundle
videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1
 ! videoconvert ! queue
 ! x264enc tune=zerolatency key-int-max=30 bitrate=600 {x264}
 ! video/x-h264,profile={profile}
 ! rtph264pay config-interval=-1 ! queue
 ! application/x-rtp,media=video,encoding-name=H264,payload=102 ! webrtc.
audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! queue ! opusenc
 ! rtpopuspay ! queue ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111 ! webrtc.
"""
# x264 writes the lowest profile its tools need, whatever the caps say: pick the tools too
X264_TOOLS = {
    "constrained-baseline": "speed-preset=ultrafast",
    "main": "speed-preset=superfast cabac=true dct8x8=false",
    "high": "speed-preset=superfast cabac=true dct8x8=true",
}
HTTP_TIMEOUT_S = 10


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class WhipClient:
    def __init__(self, url: str, token: str, profile: str, loopback: bool) -> None:
        self.url, self.token = url, token
        self.resource: str | None = None
        self.exit_status = 0
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.parse_launch(PIPELINE.format(profile=profile, x264=X264_TOOLS[profile]))
        self.webrtc = self.pipeline.get_by_name("webrtc")
        if loopback:
            self._gather_on_loopback()
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering)
        self.webrtc.connect("notify::connection-state", self._on_connection)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_error)
        self._offered = False

    def _gather_on_loopback(self) -> None:
        gi.require_version("Nice", "0.1")
        from gi.repository import Nice

        # held for the client's lifetime: dropping these Python wrappers early unrefs the agent
        self._ice = self.webrtc.get_property("ice-agent")
        self._agent = self._ice.get_property("agent")
        address = Nice.Address()
        address.set_from_string("127.0.0.1")
        self._agent.add_local_address(address)

    def _on_negotiation_needed(self, webrtc: Any) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_offer, None)
        webrtc.emit("create-offer", None, promise)

    def _on_offer(self, promise: Any, _data: Any) -> None:
        reply = promise.get_reply()
        offer = reply.get_value("offer")
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def _on_gathering(self, webrtc: Any, _spec: Any) -> None:
        state = webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self._offered:
            self._offered = True
            GLib.idle_add(self._post_offer)

    def _post_offer(self) -> bool:
        sdp = self.webrtc.get_property("local-description").sdp.as_text()
        say("offer", sdp=sdp)
        request = urllib.request.Request(self.url, data=sdp.encode(), method="POST", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/sdp",
        })
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
                status, body = resp.status, resp.read().decode()
                location = resp.headers.get("Location")
        except urllib.error.HTTPError as exc:
            say("refused", status=exc.code, body=exc.read().decode(errors="replace"))
            self.exit_status = 2
            self.loop.quit()
            return False
        say("answer", status=status, sdp=body, location=location)
        if status != 201 or not location:
            self.exit_status = 2
            self.loop.quit()
            return False
        self.resource = urllib.parse.urljoin(self.url, location)
        _result, message = GstSdp.SDPMessage.new_from_text(body)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, message)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        return False

    def _on_connection(self, webrtc: Any, _spec: Any) -> None:
        state = webrtc.get_property("connection-state")
        say("state", connection=state.value_nick)

    def _on_error(self, _bus: Any, message: Any) -> None:
        error, debug = message.parse_error()
        say("error", message=error.message, debug=debug)
        self.exit_status = 3
        self.loop.quit()

    def delete(self) -> int | None:
        if self.resource is None:
            return None
        request = urllib.request.Request(self.resource, method="DELETE", headers={
            "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def run(self, seconds: float) -> int:
        GLib.timeout_add(int(seconds * 1000), self.loop.quit)
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, self._stop)
        self.pipeline.set_state(Gst.State.PLAYING)
        try:
            self.loop.run()
        finally:
            status = self.delete()
            self.pipeline.set_state(Gst.State.NULL)
            say("done", delete_status=status)
        return self.exit_status

    def _stop(self) -> bool:
        self.loop.quit()
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the WHIP endpoint, e.g. http://127.0.0.1:8080/whip/room")
    parser.add_argument("token", help="a token with the publish grant")
    parser.add_argument("--profile", default="constrained-baseline", choices=sorted(X264_TOOLS),
                        help="the H.264 profile x264enc encodes")
    parser.add_argument("--seconds", type=float, default=30.0, help="publish this long at most")
    parser.add_argument("--loopback", action="store_true", help="ICE on 127.0.0.1 only")
    args = parser.parse_args()
    Gst.init(None)
    return WhipClient(args.url, args.token, args.profile, args.loopback).run(args.seconds)


if __name__ == "__main__":
    sys.exit(main())
