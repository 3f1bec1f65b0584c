"""Node registry, heartbeats and room -> node routing on both backends."""

from __future__ import annotations

import asyncio

import pytest

from signaling.bus import Bus
from signaling.nodes import NodeAgent, NoNodeAvailable, RoomRouter, choose_node
from signaling.store import NodeRecord, Store

pytest_plugins = ["store_fixtures"]


def test_choose_node_prefers_least_loaded_open_node() -> None:
    nodes = [
        NodeRecord("a", "http://a", viewers=90, max_viewers=100),
        NodeRecord("b", "http://b", viewers=10, max_viewers=100, draining=True),
        NodeRecord("c", "http://c", viewers=40, max_viewers=100),
        NodeRecord("d", "http://d", viewers=100, max_viewers=100),
    ]
    assert choose_node(nodes).id == "c"
    with pytest.raises(NoNodeAvailable):
        choose_node([nodes[1], nodes[3]])


async def test_rooms_spread_and_stick(store: Store) -> None:
    load = {"n1": 0, "n2": 0}
    agents = [
        NodeAgent(store, lambda i=i: NodeRecord(i, f"http://{i}", viewers=load[i]),  # type: ignore[misc]
                  interval_s=0.05, ttl_ms=1000)
        for i in ("n1", "n2")
    ]
    for agent in agents:
        await agent.start()
    router = RoomRouter(store)
    try:
        first = await router.owner("r1")
        load[first.id] = 50
        await asyncio.sleep(0.15)  # the next heartbeats carry the load
        second = await router.owner("r2")
        assert {first.id, second.id} == {"n1", "n2"}
        assert (await router.owner("r1")).id == first.id  # sticks while the owner lives
        owners = await asyncio.gather(*(RoomRouter(store).owner("r3") for _ in range(20)))
        assert len({o.id for o in owners}) == 1  # concurrent routers agree
    finally:
        for agent in agents:
            await agent.close()
    assert await store.list_nodes() == []


async def test_dead_node_rooms_move_within_the_ttl(store: Store) -> None:
    dying = NodeAgent(store, lambda: NodeRecord("n1", "http://n1"), interval_s=0.05, ttl_ms=300)
    await dying.start()
    router = RoomRouter(store)
    assert (await router.owner("r")).id == "n1"
    assert dying._task is not None
    dying._task.cancel()  # the process "dies": no more heartbeats, no clean removal
    survivor = NodeAgent(store, lambda: NodeRecord("n2", "http://n2"), interval_s=0.05,
                         ttl_ms=300)
    await survivor.start()
    assert (await router.owner("r")).id == "n1"
    await asyncio.sleep(0.4)
    assert (await router.owner("r")).id == "n2"
    await survivor.close()
    with pytest.raises(NoNodeAvailable):
        await router.owner("other")


async def test_media_commands_cross_processes(bus: Bus) -> None:
    from rest_helpers import RecordingMedia

    from signaling.remote_media import BusMediaControl, MediaCommands

    node_side = RecordingMedia()
    commands = MediaCommands(bus, node_side)
    await commands.start()
    try:
        control = BusMediaControl(bus)
        await control.end_session("r", "S1")
        await control.mute_track("r", "S1", "T1", True)
        await control.end_room("r")
        for _ in range(100):
            if len(node_side.calls) == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await commands.close()
    assert node_side.calls == [
        ("end_session", "r", "S1"), ("mute_track", "r", "S1", "T1", True), ("end_room", "r"),
    ]
