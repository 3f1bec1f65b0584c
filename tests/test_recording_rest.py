"""The recordings index and REST doors on both backends, with recordings seeded in the index
and the record directory (the media path is tests/test_recording.py's and
tests/test_recording_media.py's): list, media with Range, delete, the recording flag, bad
input refused with JSON and nothing left behind, retention."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Server

from sfu.recording.retention import DAY_S, sweep
from shopcast.config import Config
from signaling.recordings_index import (
    ABANDONED_S,
    META,
    RECORDINGS_KEY,
    SCOPE,
    RecordingMeta,
    RecordingsIndex,
    Segment,
    new_recording_id,
)
from signaling.store import Store

pytest_plugins = ["store_fixtures"]

INIT = b"I" * 10


@pytest.fixture
def config(config: Config, backend: str, prefix: str, tmp_path: Path) -> Config:
    config.redis = backend
    config.redis_prefix = prefix
    config.record_dir = str(tmp_path / "recordings")
    return config


async def seed(index: RecordingsIndex, room: str, *, finished: bool = True,
               started_at: float = 0.0) -> tuple[RecordingMeta, bytes]:
    """A recording of two segment files that share a 10-byte init; its byte stream."""
    meta = RecordingMeta(new_recording_id(), room, "node-1", started_at or time.time(),
                         duration_s=4.0, finished=finished, init_bytes=len(INIT))
    folder = index.path_of(meta.id)
    folder.mkdir(parents=True)
    first, second = INIT + bytes(range(200)), INIT + bytes(range(100, 250))
    (folder / "00000.mp4").write_bytes(first)
    (folder / "00001.mp4").write_bytes(second)
    meta.segments = [Segment(0, 0.0, 2.0, len(first)), Segment(1, 2.0, 2.0, len(second))]
    meta.bytes = len(first) + len(second) - len(INIT)
    await index.put(meta)
    return meta, first + second[len(INIT):]


async def call(method: str, url: str, token: str = "", **kwargs: Any
               ) -> tuple[int, dict[str, str], bytes]:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers,
                                                             **kwargs) as response:
        return response.status, dict(response.headers), await response.read()


def code(body: bytes) -> str:
    value: str = json.loads(body)["error"]["code"]
    return value


async def test_list_serve_and_delete_a_recording(server: Server) -> None:
    index = server.app[RECORDINGS_KEY]
    meta, stream = await seed(index, "shop")
    viewer = server.token("shop", "v", "subscribe")
    status, _, body = await call(
        "GET", f"{server.url}/api/v1/rooms/shop/recordings?token={viewer}")
    assert status == 200
    listed = json.loads(body)["recordings"]
    assert listed == [meta.public()] and "init_bytes" not in listed[0]

    url = f"{server.url}/api/v1/recordings/{meta.id}"
    status, headers, body = await call("GET", f"{url}?token={viewer}")
    assert status == 200 and body == stream and headers["Content-Type"] == "video/mp4"
    assert int(headers["Content-Length"]) == meta.bytes == len(stream)
    status, headers, body = await call("GET", url, viewer, headers={"Range": "bytes=195-214"})
    assert status == 206 and body == stream[195:215]  # across the two files
    assert headers["Content-Range"] == f"bytes 195-214/{len(stream)}"
    status, headers, body = await call("GET", url, viewer, headers={"Range": "bytes=-5"})
    assert status == 206 and body == stream[-5:]
    for bad in (f"bytes={len(stream)}-", "bytes=50-10", "bytes=0-1,5-6", "items=0-1",
                "bytes=-"):
        status, headers, body = await call("GET", url, viewer, headers={"Range": bad})
        assert status == 416 and code(body) == "range_not_satisfiable", bad
        assert headers["Content-Range"] == f"bytes */{len(stream)}"

    status, _, body = await call("DELETE", url, viewer)
    assert status == 403 and code(body) == "missing_grant"
    assert await index.get(meta.id) is not None and index.path_of(meta.id).is_dir()
    status, _, _ = await call("DELETE", url, server.token("shop", "boss", "admin"))
    assert status == 204
    assert await index.get(meta.id) is None and not index.path_of(meta.id).exists()
    status, _, body = await call("GET", url, viewer)
    assert status == 404 and code(body) == "not_found"


async def test_bad_input_is_refused_with_json_and_leaves_nothing(server: Server) -> None:
    index = server.app[RECORDINGS_KEY]
    meta, _ = await seed(index, "shop", finished=False)
    admin = server.token("shop", "boss", "admin")
    viewer = server.token("shop", "v", "subscribe")
    base = f"{server.url}/api/v1"

    for bad_id in ("R_0000000000000000", "R_..%2F..%2Fetc%2Fpasswd", "..%2F..%2Fsecret",
                   "%2e%2e", "R_0123456789ABCDEF", "R_" + "0" * 400):
        status, headers, body = await call("GET", f"{base}/recordings/{bad_id}", viewer)
        assert status == 404 and headers["Content-Type"].startswith("application/json"), bad_id
        status, _, body = await call("DELETE", f"{base}/recordings/{bad_id}", admin)
        assert status == 404, bad_id
    status, _, body = await call("GET", f"{base}/recordings/{meta.id}")
    assert status == 401 and code(body) == "missing_token"
    status, _, body = await call("GET", f"{base}/recordings/{meta.id}?token=garbage")
    assert status == 401
    other_room = server.token("other", "v", "subscribe")
    status, _, body = await call("GET", f"{base}/recordings/{meta.id}", other_room)
    assert status == 403 and code(body) == "wrong_room"
    status, _, body = await call("GET", f"{base}/rooms/shop/recordings", other_room)
    assert status == 403
    status, _, body = await call("GET", f"{base}/rooms/shop/recordings", server.token(
        "shop", "chatter", "chat"))
    assert status == 403 and code(body) == "missing_grant"
    status, _, body = await call("GET", f"{base}/rooms/bad%20room/recordings", viewer)
    assert status == 400

    status, _, body = await call("DELETE", f"{base}/recordings/{meta.id}", admin)
    assert status == 409 and code(body) == "recording_in_progress"
    assert await index.get(meta.id) is not None and index.path_of(meta.id).is_dir()
    killed, _ = await seed(index, "shop", finished=False)  # its process died: no more updates
    killed.updated_at = time.time() - ABANDONED_S - 1
    await index.store.hset(SCOPE, META, killed.id, killed.dumps())
    status, _, _ = await call("DELETE", f"{base}/recordings/{killed.id}", admin)
    assert status == 204 and await index.get(killed.id) is None

    url = f"{base}/rooms/shop/recording"
    status, _, body = await call("PUT", url, viewer, json={"enabled": True})
    assert status == 403 and code(body) == "missing_grant"
    for body_in in ({"enabled": "yes"}, {}, {"enabled": True, "extra": 1}, [1]):
        status, _, body = await call("PUT", url, admin, json=body_in)
        assert status == 400, body_in
    status, _, body = await call("PUT", url, admin, data=b"{" * 5000,
                                 headers={"Content-Type": "application/json"})
    assert 400 <= status < 500
    assert await index.enabled("shop") is None  # nothing was stored by a refusal
    status, _, body = await call("PUT", url, admin, json={"enabled": False})
    assert status == 200 and await index.enabled("shop") is False

    status, _, _ = await call("GET", f"{server.url}/healthz")
    assert status == 200  # still serving


async def test_the_index_is_shared_and_outlives_the_room(store: Store, tmp_path: Path) -> None:
    index = RecordingsIndex(store, tmp_path)
    other = RecordingsIndex(store, tmp_path)  # another process on the same store
    later, _ = await seed(index, "shop", started_at=2000.0)
    earlier, _ = await seed(index, "shop", started_at=1000.0)
    elsewhere, _ = await seed(index, "other")
    assert [m.id for m in await other.of_room("shop")] == [earlier.id, later.id]
    assert await other.get(later.id) == later
    assert await other.get("../" + later.id) is None
    assert await index.enabled("shop") is None
    await index.set_enabled("shop", True)
    assert await other.enabled("shop") is True
    await store.drop_room_data("shop")  # closing the room keeps its recordings and flag
    assert len(await other.of_room("shop")) == 2 and await other.enabled("shop") is True
    assert await other.remove(later) is True
    assert await other.remove(later) is False
    assert [m.id for m in await index.of_room("shop")] == [earlier.id]
    assert {m.id for m in await index.every()} == {earlier.id, elsewhere.id}


async def test_retention_removes_old_recordings_and_orphans(store: Store,
                                                            tmp_path: Path) -> None:
    index = RecordingsIndex(store, tmp_path)
    now = time.time()
    old, _ = await seed(index, "shop", started_at=now - 10 * DAY_S)
    recording, _ = await seed(index, "shop", started_at=now - 10 * DAY_S)  # still being made
    recent, _ = await seed(index, "shop", started_at=now - DAY_S)
    orphan = tmp_path / new_recording_id()
    orphan.mkdir()
    os.utime(orphan, (now - 9 * DAY_S, now - 9 * DAY_S))
    assert await sweep(index, 0, set()) == 0  # 0 keeps everything
    assert await sweep(index, 7, {recording.id}) == 2
    assert {m.id for m in await index.every()} == {recording.id, recent.id}
    assert not index.path_of(old.id).exists() and not orphan.exists()
    assert index.path_of(recent.id).is_dir() and index.path_of(recording.id).is_dir()
