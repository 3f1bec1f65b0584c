"""The naive Python "SFU": aiohttp + aiortc with ``aiortc.contrib.media.MediaRelay``.

This is what a Python developer tries first: the publisher's tracks are decoded once and every
viewer's RTCRtpSender encodes them again (one libx264 and one Opus encoder per viewer). It speaks
the same WHIP/WHEP contract as ShopCast (POST offer -> 201 answer + Location, DELETE to end,
HS256 bearer tokens with a room and grants), so ``python -m loadtest webrtc`` runs the very same
workload against it and the report can put ShopCast's cost per forwarded packet beside it.

``python -m loadtest.baselines.mediarelay_server --port 8091 --secret S`` (loopback only)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import uuid
import warnings
from typing import Any

import aioice.ice
import jwt
from aiohttp import web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from loadtest.media import pin_video_bitrate

log = logging.getLogger("mediarelay_server")
MAX_SESSIONS = 1000


class Relay:
    """Rooms: the publisher's tracks per room, every peer connection by resource id."""

    def __init__(self, secret: str, video_bitrate: int) -> None:
        self.secret = secret
        self.video_bitrate = video_bitrate
        self.relay = MediaRelay()
        self.tracks: dict[str, dict[str, MediaStreamTrack]] = {}
        self.pcs: dict[str, RTCPeerConnection] = {}

    def check(self, request: web.Request, grant: str) -> str | None:
        """The room if the bearer token is valid for it and carries `grant`, else None."""
        auth = request.headers.get("Authorization", "")
        room = request.match_info["room"]
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        ok = claims.get("room") == room and grant in claims.get("grants", [])
        return room if ok else None

    async def answer(self, request: web.Request, kind: str) -> web.Response:
        room = self.check(request, "publish" if kind == "whip" else "subscribe")
        if room is None:
            return _error(401, "unauthorized", "bad token")
        if len(self.pcs) >= MAX_SESSIONS:
            return _error(503, "full", "too many sessions")
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if kind == "whip":
            tracks = self.tracks.setdefault(room, {})

            @pc.on("track")
            def _on_track(track: MediaStreamTrack) -> None:
                tracks[track.kind] = track

            await pc.setRemoteDescription(offer)
        else:
            tracks = self.tracks.get(room, {})
            if not tracks:
                await pc.close()
                return _error(404, "no_publisher", "nobody publishes in this room")
            await pc.setRemoteDescription(offer)
            for tr in pc.getTransceivers():
                if tr.kind in tracks:  # decode once (relay), encode per viewer (the sender)
                    tr.sender.replaceTrack(self.relay.subscribe(tracks[tr.kind]))
                    tr.direction = "sendonly"
                    if tr.kind == "video" and self.video_bitrate:
                        # Same bitrate as the publisher (the same workload as ShopCast's); left
                        # alone, aiortc's encoder follows REMB up to 3 Mbps.
                        pin_video_bitrate(tr.sender, self.video_bitrate, "H264")
        await pc.setLocalDescription(await pc.createAnswer())
        rid = uuid.uuid4().hex
        self.pcs[rid] = pc

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.drop(rid)

        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/{kind}/{room}/{rid}"},
        )

    async def drop(self, rid: str) -> bool:
        pc = self.pcs.pop(rid, None)
        if pc is not None:
            await pc.close()
        return pc is not None

    async def close(self) -> None:
        await asyncio.gather(*(self.drop(r) for r in list(self.pcs)), return_exceptions=True)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def make_app(secret: str, video_bitrate: int = 600_000) -> web.Application:
    relay = Relay(secret, video_bitrate)
    app = web.Application()

    async def post(request: web.Request) -> web.Response:
        return await relay.answer(request, request.match_info["kind"])

    async def delete(request: web.Request) -> web.Response:
        if relay.check(request, "publish") is None and relay.check(request, "subscribe") is None:
            return _error(401, "unauthorized", "bad token")
        found = await relay.drop(request.match_info["id"])
        return web.Response(status=200 if found else 404)

    async def on_cleanup(_app: web.Application) -> None:
        await relay.close()

    app.router.add_post("/{kind:whip|whep}/{room}", post)
    app.router.add_delete("/{kind:whip|whep}/{room}/{id}", delete)
    app.on_cleanup.append(on_cleanup)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.baselines.mediarelay_server",
                                description=__doc__)
    p.add_argument("--port", type=int, default=8091)
    p.add_argument("--secret", required=True)
    p.add_argument("--video-bitrate", type=int, default=600_000,
                   help="pin each viewer's H.264 encoder (0: follow REMB like stock aiortc)")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper())
    warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

    def loopback(use_ipv4: bool, use_ipv6: bool) -> list[Any]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback  # loopback only, like every loadtest run
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    app = make_app(args.secret, args.video_bitrate)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
