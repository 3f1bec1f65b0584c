"""/metrics carries the control plane's lines next to the SFU's."""

from __future__ import annotations

from typing import Any

from rest_helpers import Api, join, signaling_of


async def test_metrics_include_rooms_participants_and_webhooks(server: Any) -> None:
    signaling = signaling_of(server)
    await join(signaling, "m1", "P1", "anchor", "whip")
    await join(signaling, "m1", "V1", "viewer", "flv")
    status, text = await Api(server.url).get("/metrics")
    assert status == 200
    lines = text.splitlines()
    assert "shopcast_api_rooms 1" in lines
    assert 'shopcast_api_participants{transport="flv"} 1' in lines
    assert 'shopcast_api_participants{transport="whip"} 1' in lines
    assert 'shopcast_webhooks_total{result="failed"} 0' in lines
    assert "# TYPE shopcast_rooms gauge" in lines  # the SFU's part is still there
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(names) == len(set(names))
