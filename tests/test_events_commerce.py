"""The real control plane behind the ``events`` data channel: WebRTC viewers chat, like and
buy in a flash sale over their channel, in one process and with worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import loopback_config
from waiting import wait_for

from loadtest.clients import play, publish
from loadtest.media import PaintedVideoTrack, ToneAudioTrack
from sfu.node import NODE_KEY
from shopcast.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture(params=[0, 2], ids=["one-process", "two-workers"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """Every test here runs with viewers in one process and in two worker processes."""
    return loopback_config(tmp_path, workers=request.param)


async def test_viewers_chat_and_buy_over_their_data_channel(server: Any) -> None:
    node = server.app[NODE_KEY]
    anchor = await publish(
        server.url, "shop", server.token("shop", "anchor", "publish"),
        PaintedVideoTrack(), ToneAudioTrack(),
    )
    await wait_for(lambda: "shop" in node.rooms and node.rooms["shop"].live, 10, "anchor live")
    admin = {"Authorization": f"Bearer {server.token('shop', 'ops', 'admin')}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/api/v1/rooms/shop/products", headers=admin, json={
            "sku": "mug", "title": "Mug", "price": 1299, "currency": "EUR",
        }) as response:
            assert response.status in (200, 201), await response.text()
        async with http.post(f"{server.url}/api/v1/rooms/shop/sales", headers=admin, json={
            "sku": "mug", "stock": 3, "per_user_limit": 1, "duration_s": 60,
        }) as response:
            assert response.status in (200, 201), await response.text()
    viewers = [
        await play(server.url, "shop", server.token("shop", f"buyer{i}", "subscribe", "chat"),
                   decode=False, events=True)
        for i in range(5)
    ]
    try:
        await wait_for(lambda: all(v.events.of_type("state") for v in viewers), 20, "state")
        viewers[0].events.send({"type": "chat", "text": "<b>is it dishwasher safe?</b>"})
        await wait_for(lambda: all(v.events.of_type("chat") for v in viewers), 10, "chat")
        assert all(
            v.events.of_type("chat")[-1]["text"] == "<b>is it dishwasher safe?</b>"
            for v in viewers
        )
        for i, viewer in enumerate(viewers):
            viewer.events.send({"type": "purchase", "sku": "mug", "qty": 1,
                                "key": f"k{i}"})
        await wait_for(lambda: any(v.events.of_type("sold_out") for v in viewers), 10,
                       f"sold out announced; replies: {[v.events.received[-2:] for v in viewers]}")
        async with aiohttp.ClientSession() as http, http.get(
            f"{server.url}/api/v1/rooms/shop/orders", headers=admin
        ) as response:
            orders = (await response.json())
        listed = orders["orders"] if isinstance(orders, dict) else orders
        assert len(listed) == 3  # stock 3: exactly three of five buyers got one
    finally:
        for viewer in viewers:
            await viewer.close()
        await anchor.close()
