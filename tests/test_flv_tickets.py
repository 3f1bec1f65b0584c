"""FLV hotlink protection: the playback plan's ``?ticket=`` URLs (``signaling/flv_tickets.py``).

A ticket starts a stream for its room and identity within its lifetime; an expired, forged or
other-room ticket is refused (401/403 JSON, counted on ``/metrics``), a plain ``?token=`` only
with ``--flv-plain-token``, and a ban holds whatever the credential. Real clients: ffprobe and
aiohttp read the stream through the plan's URL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from flv_helpers import ffprobe, start_anchor
from rest_helpers import Api
from test_browser_flv import PageLog, wait_text

from shopcast.config import Config
from signaling.claims import Claims, Grant
from signaling.errors import ApiError
from signaling.flv_tickets import MAX_TICKET_CHARS, TICKET_TTL_S, issue, verify

SECRET = "k" * 40
VIEWER = Claims("fan", "shop", frozenset({Grant.SUBSCRIBE}), expires_at=int(time.time()) + 3600)


def refused(ticket: str, room: str = "shop", secret: str = SECRET) -> tuple[int, str]:
    with pytest.raises(ApiError) as caught:
        verify(secret, ticket, room)
    return caught.value.status, caught.value.code


def test_a_ticket_carries_its_room_and_identity_until_it_expires() -> None:
    now = time.time()
    claims = verify(SECRET, issue(SECRET, VIEWER, "shop", now=now), "shop", now=now + 1)
    assert (claims.identity, claims.room, claims.grants) == ("fan", "shop",
                                                            frozenset({Grant.SUBSCRIBE}))
    assert claims.expires_at == int(now) + TICKET_TTL_S
    ticket = issue(SECRET, VIEWER, "shop", now=now)
    with pytest.raises(ApiError) as late:
        verify(SECRET, ticket, "shop", now=now + TICKET_TTL_S + 1)
    assert (late.value.status, late.value.code) == (401, "ticket_expired")


def test_a_ticket_never_outlives_its_token() -> None:
    short = Claims("fan", "shop", frozenset({Grant.SUBSCRIBE}), expires_at=int(time.time()) + 5)
    assert verify(SECRET, issue(SECRET, short, "shop"), "shop").expires_at == short.expires_at


def test_the_longest_identity_a_token_may_carry_fits_in_a_ticket() -> None:
    """The REST mint takes identities and names of 128 characters: in any script, the
    ticket the plan hands out for them is one its door takes."""
    for letter in ("x", "粉", "\U0001F6D2"):  # ASCII, CJK, beyond the BMP
        fan = Claims(letter * 128, "r" * 64, frozenset({Grant.SUBSCRIBE}), name=letter * 128)
        ticket = issue(SECRET, fan, "r" * 64)
        assert len(ticket) <= MAX_TICKET_CHARS
        assert verify(SECRET, ticket, "r" * 64).identity == fan.identity


def test_forged_damaged_and_foreign_tickets_are_refused() -> None:
    ticket = issue(SECRET, VIEWER, "shop")
    body, _, signature = ticket.partition(".")
    other = issue(SECRET, Claims("troll", "shop", frozenset()), "shop")
    assert refused(f"{other.partition('.')[0]}.{signature}") == (401, "invalid_ticket")
    assert refused(ticket, secret="x" * 40) == (401, "invalid_ticket")  # another key
    assert refused(body) == (401, "invalid_ticket")  # no signature
    assert refused(ticket[:-2]) == (401, "invalid_ticket")
    assert refused("") == (401, "invalid_ticket")
    assert refused("a" * (MAX_TICKET_CHARS + 1)) == (401, "invalid_ticket")
    assert refused(SECRET) == (401, "invalid_ticket")  # the token key is not a ticket
    assert refused(ticket, room="other") == (403, "wrong_room")


# --- the door, with real clients ---------------------------------------------------------------


async def get(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url, **kw) as response:
        return response.status, await response.json()


async def refusal_count(server: Any, reason: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    line = f'shopcast_door_refusals_total{{door="flv",reason="{reason}"}} '
    counts = [int(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)]
    return counts[0] if counts else 0


async def plan_flv_url(server: Any, room: str, identity: str) -> str:
    status, plan = await Api(f"{server.url}/api/v1",
                             server.token(room, identity, "subscribe")).get(
        f"/rooms/{room}/playback")
    assert status == 200, plan
    url: str = plan["flv_url"]
    assert url.startswith(f"{server.url}/live/{room}.flv?ticket="), url
    return url


def ticket_url(server: Any, room: str, *, ticket_room: str = "", secret: str = "",
               **issue_kw: Any) -> str:
    """A fan's FLV URL for ``room`` with a ticket issued here (for ``ticket_room``, under
    ``secret``, ``now`` or ``ttl_s`` as given) rather than by the plan."""
    ticket_room = ticket_room or room
    fan = Claims("fan", ticket_room, frozenset({Grant.SUBSCRIBE}))
    ticket = issue(secret or server.config.secret, fan, ticket_room, **issue_kw)
    return f"{server.url}/live/{room}.flv?ticket={ticket}"


@pytest.mark.slow
async def test_the_plans_ticket_plays_and_bad_tickets_are_refused_and_counted(
        server: Any) -> None:
    room = "tk1"
    anchor = await start_anchor(server, room)
    try:
        url = await plan_flv_url(server, room, "fan")
        probe = await asyncio.to_thread(ffprobe, url)  # a real player through the ticket
        assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}

        before = {r: await refusal_count(server, r)
                  for r in ("ticket_expired", "invalid_ticket", "wrong_room")}
        status, body = await get(ticket_url(server, room, now=time.time() - 120))
        assert (status, body["error"]["code"]) == (401, "ticket_expired")
        status, body = await get(ticket_url(server, room, secret="f" * 40))  # another key
        assert (status, body["error"]["code"]) == (401, "invalid_ticket")
        status, body = await get(f"{server.url}/live/{room}.flv?ticket=" + "a" * 5000)
        assert (status, body["error"]["code"]) == (401, "invalid_ticket")
        status, body = await get(ticket_url(server, room, ticket_room="tk0"))  # another room's
        assert (status, body["error"]["code"]) == (403, "wrong_room")
        assert await refusal_count(server, "ticket_expired") == before["ticket_expired"] + 1
        assert await refusal_count(server, "invalid_ticket") == before["invalid_ticket"] + 2
        assert await refusal_count(server, "wrong_room") == before["wrong_room"] + 1
        # the server serves on: the plan's URL still plays
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            assert await response.content.readexactly(3) == b"FLV"
    finally:
        await anchor.close()


@pytest.mark.slow
async def test_a_started_stream_outlives_its_ticket_but_the_url_cannot_be_replayed(
        server: Any) -> None:
    room = "tk2"
    anchor = await start_anchor(server, room)
    try:
        url = ticket_url(server, room, ttl_s=2)
        async with aiohttp.ClientSession() as http:
            first = await http.get(url)
            try:
                assert first.status == 200
                assert await first.content.readexactly(3) == b"FLV"
                deadline = time.monotonic() + 10
                for _ in range(40):  # replay the leaked URL until the ticket has expired
                    async with http.get(url) as replay:
                        if replay.status != 200:
                            answer = replay.status, (await replay.json())["error"]["code"]
                            break
                    assert time.monotonic() < deadline, "the ticket never expired"
                    await asyncio.sleep(0.5)
                else:
                    raise AssertionError("the ticket never expired")
                assert answer == (401, "ticket_expired")
                got = 0  # the stream that started in time plays on past the expiry
                for _ in range(200):
                    got += len(await asyncio.wait_for(first.content.read(4096), 2.0))
                    if got >= 20_000:
                        break
                assert got >= 20_000 and not first.content.at_eof()
            finally:
                first.close()
    finally:
        await anchor.close()


@pytest.mark.slow
async def test_a_ban_holds_with_a_ticket(server: Any) -> None:
    room = "tk3"
    anchor = await start_anchor(server, room)
    try:
        url = await plan_flv_url(server, room, "troll")  # handed out before the ban
        admin = Api(f"{server.url}/api/v1", server.token(room, "mod", "admin"))
        status, _ = await admin.post(f"/rooms/{room}/chat/ban", {"identity": "troll"})
        assert status == 200
        status, body = await get(url)
        assert (status, body["error"]["code"]) == (403, "banned")
        status, _ = await Api(f"{server.url}/api/v1", server.token(room, "troll", "subscribe")) \
            .get(f"/rooms/{room}/playback")
        assert status in (200, 403)  # whatever the plan says, the door refuses the ticket
        if status == 200:
            status, body = await get(await plan_flv_url(server, room, "troll"))
            assert (status, body["error"]["code"]) == (403, "banned")
        async with aiohttp.ClientSession() as http, \
                http.get(await plan_flv_url(server, room, "fan")) as response:
            assert response.status == 200, "others still play"
    finally:
        await anchor.close()


async def test_a_plain_token_is_refused_without_the_flag(server: Any) -> None:
    token = server.token("tk4", "fan", "subscribe")
    before = await refusal_count(server, "ticket_required")
    status, body = await get(f"{server.url}/live/tk4.flv?token={token}")
    assert (status, body["error"]["code"]) == (401, "ticket_required")
    assert "playback" in body["error"]["message"]
    assert await refusal_count(server, "ticket_required") == before + 1
    # an empty Authorization header is no header: the ?token= beside it is still refused
    status, body = await get(f"{server.url}/live/tk4.flv?token={token}",
                             headers={"Authorization": ""})
    assert (status, body["error"]["code"]) == (401, "ticket_required")
    # a header token does not travel with a link: still accepted (404: no such room here)
    status, body = await get(f"{server.url}/live/tk4.flv",
                             headers={"Authorization": f"Bearer {token}"})
    assert (status, body["error"]["code"]) == (404, "not_found")


class TestWithThePlainTokenFlag:
    @pytest.fixture
    def config(self, config: Config) -> Config:
        config.flv_plain_token = True
        return config

    @pytest.mark.slow
    async def test_a_plain_token_plays(self, server: Any) -> None:
        room = "tk5"
        anchor = await start_anchor(server, room)
        try:
            token = server.token(room, "fan", "subscribe")
            probe = await asyncio.to_thread(
                ffprobe, f"{server.url}/live/{room}.flv?token={token}")
            assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}
            status, body = await get(  # the token's own checks still hold
                f"{server.url}/live/{room}.flv?token={server.token('x', 'fan', 'subscribe')}")
            assert (status, body["error"]["code"]) == (403, "wrong_room")
            ticket = await plan_flv_url(server, room, "fan")  # tickets work too
            async with aiohttp.ClientSession() as http, http.get(ticket) as response:
                assert response.status == 200
        finally:
            await anchor.close()


@pytest.mark.slow
async def test_the_viewer_page_shows_why_the_plan_refused_it(server: Any, chromium: Any) -> None:
    """On FLV the page asks the plan for each URL: a token that may not watch the room is told
    so (it used to learn it from the FLV door) instead of waiting for the anchor for ever."""
    room = "tk6"
    anchor = await start_anchor(server, room)
    try:
        page = await chromium.new_page()
        log = PageLog(page)
        token = server.token("elsewhere", "viewer", "subscribe")
        await page.goto(f"{server.url}/viewer?room={room}&token={token}&transport=flv")
        await wait_text(page, "#state", "error")
        assert "wrong_room" in (await page.text_content("#error") or "")
        assert not [u for u in log.urls if ".flv" in u], "no FLV request without a ticket"
        assert log.errors == []
    finally:
        await anchor.close()
