"""Hardening, issue 14 defect 6 and part of 12: the webhook key is not the token key, short
token keys stop the process, /static/ serves only what the pages load, /ws and /ws/events check
the room name, CORS follows an allow-list."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import msgpack
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import TEST_SECRET, free_port
from rest_helpers import join

from shopcast.config import MIN_SECRET_BYTES, Config, add_arguments, load
from signaling.service import SIGNALING_KEY
from signaling.tokens import mint
from signaling.webhooks import SIGNATURE_HEADER, verify, webhook_key
from signaling.ws_signaling import WS_KEY

pytest_plugins = ["store_fixtures"]

REPO = Path(__file__).resolve().parent.parent
ORIGIN = "https://shop.example"
EVIL = "https://evil.example"


@pytest.fixture
def config(config: Config, backend: str, prefix: str) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    return config


def _load(argv: list[str], env: dict[str, str] | None = None) -> Config:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load(parser.parse_args(argv), env or {})


async def fetch(method: str, url: str, headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.request(
        method, url, headers=headers or {}, allow_redirects=False
    ) as response:
        return response.status, dict(response.headers), await response.read()


# --- defect 6: the webhook key -----------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    posts: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((await request.read(), dict(request.headers)))
        return web.Response(status=204)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    await runner.cleanup()


@pytest_asyncio.fixture
async def hooked(config: Config, receiver: Receiver) -> AsyncIterator[Any]:
    """The server with webhooks on and no --webhook-secret: the derived key signs."""
    from shopcast.app import create_app

    config.webhook_urls = [receiver.url]
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        yield app, f"http://{config.host}:{config.port}"
    finally:
        await runner.cleanup()


def test_webhook_key_is_hmac_of_the_secret_with_a_label() -> None:
    # printf shopcast-webhooks | openssl dgst -sha256 -hmac k  (as docs/api.md tells receivers)
    assert webhook_key("k") == "6e24b6a46223eb8ac09d83e5f45ad12b8d4f52bf22c1f42dfb72663f03dfda16"
    assert webhook_key("k2") != webhook_key("k")


async def test_webhooks_are_signed_with_the_derived_key_which_mints_nothing(
    hooked: Any, receiver: Receiver
) -> None:
    app, base = hooked
    signaling = app[SIGNALING_KEY]
    await join(signaling, "wk1", "P1", "anchor", "whip")
    await asyncio.wait_for(signaling.webhooks.drain(), 5)
    assert receiver.posts, "no webhook arrived"
    derived = webhook_key(TEST_SECRET)
    assert derived != TEST_SECRET
    for body, headers in receiver.posts:
        assert verify(derived, body, headers[SIGNATURE_HEADER])
        assert not verify(TEST_SECRET, body, headers[SIGNATURE_HEADER])
    # a receiver holds only the webhook key: a token it signs is refused everywhere
    forged = mint(derived, room="*", identity="receiver", grants=["admin"])
    status, _, body = await fetch("GET", f"{base}/api/v1/rooms",
                                  {"Authorization": f"Bearer {forged}"})
    assert status == 401 and json.loads(body)["error"]["code"]
    real = mint(TEST_SECRET, room="*", identity="ops", grants=["admin"])
    status, _, _ = await fetch("GET", f"{base}/api/v1/rooms", {"Authorization": f"Bearer {real}"})
    assert status == 200


def test_a_webhook_secret_equal_to_the_token_secret_is_refused() -> None:
    with pytest.raises(SystemExit, match="--webhook-secret must differ from --secret"):
        _load(["--secret", TEST_SECRET, "--webhook-secret", TEST_SECRET])
    config = _load(["--secret", TEST_SECRET, "--webhook-secret", "another-webhook-key"])
    assert config.webhook_secret == "another-webhook-key"


# --- 12: minimum token key length --------------------------------------------------------------


def test_a_short_secret_stops_the_process(tmp_path: Path) -> None:
    short = "x" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(SystemExit, match=r"--secret \(SHOPCAST_SECRET\) is 31 bytes"):
        Config(secret=short, secret_file=str(tmp_path / "s")).resolve_secret()
    with pytest.raises(SystemExit, match="at least 32"):
        _load([], {"SHOPCAST_SECRET": "test-secret"}).resolve_secret()
    kept = tmp_path / "kept"
    kept.write_text("short-key\n")
    with pytest.raises(SystemExit, match=r"the key in .* is 9 bytes"):
        Config(secret_file=str(kept)).resolve_secret()
    ok = "y" * MIN_SECRET_BYTES
    assert Config(secret=ok, secret_file=str(tmp_path / "s")).resolve_secret() == ok
    generated = Config(secret_file=str(tmp_path / "new")).resolve_secret()
    assert len(generated.encode()) >= MIN_SECRET_BYTES


def test_serve_with_a_short_secret_exits_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPCAST_")}
    done = subprocess.run(
        [sys.executable, "-m", "shopcast.cli", "serve", "--secret", "test-secret",
         "--port", str(free_port()), "--rtmp-port", "0", "--workers", "0",
         "--secret-file", str(tmp_path / "secret")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "--secret" in lines[0] and "Traceback" not in done.stderr
    assert "serving" not in done.stdout


# --- 12: /static/ serves what the pages load, nothing else ---------------------------------------


async def test_static_serves_only_the_pages_files(server: Any) -> None:
    for path in ("/static/package.json", "/static/package-lock.json",
                 "/static/node_modules/mpegts.js/package.json",
                 "/static/node_modules/mpegts.js/dist/mpegts.js",
                 "/static/viewer.html", "/static/js/../package.json",
                 "/static/js/%2e%2e/package.json", "/static/css/..%2fpackage.json"):
        status, headers, body = await fetch("GET", server.url + path)
        assert status in (403, 404), (path, status)
        assert headers.get("Content-Type", "").startswith("application/json"), path
        assert b"dependencies" not in body and b"lockfileVersion" not in body, path
    # what the pages reference still loads
    pages = [(REPO / "web" / name).read_text() for name in
             ("index.html", "anchor.html", "cohost.html", "viewer.html")]
    referenced = {part.split('"')[0] for page in pages for part in page.split('"/static/')[1:]}
    assert referenced, "the pages reference no static file?"
    for name in sorted(referenced):
        status, _, body = await fetch("GET", f"{server.url}/static/{name}")
        assert status == 200 and body, name
    for path in ("/static/js/ws_signal.js", "/static/js/flv.js", "/vendor/mpegts.js", "/viewer"):
        status, _, body = await fetch("GET", server.url + path)
        assert status == 200 and body, path


# --- 12: /ws and /ws/events check the room name --------------------------------------------------


BAD_ROOMS = ["-dash", "a" * 65, "sp ace", "semi;colon", "_under", "ünicode"]


async def test_ws_events_refuses_a_bad_room_name(server: Any) -> None:
    token = server.token("*", "ops", "admin")
    for room in BAD_ROOMS:
        url = f"{server.url}/ws/events/{quote(room, safe='')}?token={token}"
        status, _, body = await fetch("GET", url)
        assert status == 400, (room, status, body)
        assert json.loads(body)["error"]["code"] == "bad_room", room
    # a good name beside them still streams its state
    async with aiohttp.ClientSession() as http, http.ws_connect(
        f"{server.url}/ws/events/good-room.1?token={token}"
    ) as ws:
        message = await asyncio.wait_for(ws.receive(), 5)
        assert msgpack.unpackb(message.data)["type"] == "state"


async def test_ws_join_refuses_a_bad_room_name(server: Any) -> None:
    token = server.token("*", "ops", "admin", "subscribe")
    async with aiohttp.ClientSession() as http:
        for room in [*BAD_ROOMS, "a/../b", 7, ""]:
            async with http.ws_connect(f"{server.url}/ws?token={token}") as ws:
                await ws.send_bytes(msgpack.packb({"type": "join", "room": room, "cid": 1}))
                message = await asyncio.wait_for(ws.receive(), 5)
                reply = msgpack.unpackb(message.data)
                assert reply["type"] == "error" and reply["code"] == "bad_room", (room, reply)
                closed = await asyncio.wait_for(ws.receive(), 5)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert not server.app[WS_KEY].sessions, "a refused join left a session"
        async with http.ws_connect(f"{server.url}/ws?token={token}") as ws:
            await ws.send_bytes(msgpack.packb({"type": "join", "room": "good-room", "cid": 2}))
            reply = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
            assert reply["type"] == "joined" and reply["room"] == "good-room"


# --- 12: CORS allow-list --------------------------------------------------------------------------


def test_cors_origins_flag_and_env() -> None:
    assert _load([]).cors_origins == ["*"]
    assert _load(["--cors-origins", f"{ORIGIN},https://b.example"]).cors_origins == [
        ORIGIN, "https://b.example"]
    assert _load([], {"SHOPCAST_CORS_ORIGINS": ORIGIN}).cors_origins == [ORIGIN]


@pytest.mark.parametrize("backend", ["memory"], indirect=True)
async def test_cors_default_still_allows_any_origin(server: Any) -> None:
    status, headers, _ = await fetch("OPTIONS", f"{server.url}/whep/r1",
                                     {"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == EVIL


@pytest.fixture
def allow_listed(config: Config) -> Config:
    config.cors_origins = [ORIGIN]
    return config


async def test_cors_allow_list(allow_listed: Config, server: Any) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    for path in ("/whip/r1", "/whep/r1", "/api/v1/rooms", "/live/r1.flv"):
        status, headers, _ = await fetch("OPTIONS", server.url + path, {"Origin": ORIGIN,
                                                                       **preflight})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == ORIGIN, path
        status, headers, body = await fetch("OPTIONS", server.url + path, {"Origin": EVIL,
                                                                          **preflight})
        assert status == 403, path
        assert json.loads(body)["error"]["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in headers
    # a tool's OPTIONS (no Origin, not a browser) is still answered
    status, headers, _ = await fetch("OPTIONS", f"{server.url}/whip/r1")
    assert status == 204 and headers["Accept-Post"] == "application/sdp"
    assert "Access-Control-Allow-Origin" not in headers
    admin = {"Authorization": "Bearer " + server.token("*", "ops", "admin")}
    status, headers, _ = await fetch("GET", f"{server.url}/api/v1/rooms", {"Origin": EVIL,
                                                                          **admin})
    assert "Access-Control-Allow-Origin" not in headers and headers["Vary"] == "Origin"
    status, headers, _ = await fetch("GET", f"{server.url}/api/v1/rooms", {"Origin": ORIGIN,
                                                                          **admin})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN
    # same-origin pages send no Origin on GET and need no CORS: unaffected
    status, _, _ = await fetch("GET", f"{server.url}/api/v1/rooms", admin)
    assert status == 200
