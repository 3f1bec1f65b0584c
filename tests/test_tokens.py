"""Tokens are the only access control, so every way one can be wrong must give 401/403 + a code."""

from __future__ import annotations

import time

import jwt
import pytest

from signaling.errors import ApiError
from signaling.tokens import Claims, Grant, authorize, bearer, mint, verify

SECRET = "unit-secret-that-is-long-enough-for-hs256"


def _check(exc: pytest.ExceptionInfo[ApiError], status: int, code: str) -> None:
    """Status and code together: clients branch on the code, so it is part of the contract."""
    assert (exc.value.status, exc.value.code) == (status, code), exc.value.message


def test_roundtrip_keeps_every_claim() -> None:
    now = int(time.time())
    token = mint(
        SECRET,
        room="r1",
        identity="alice",
        grants=["publish", Grant.CHAT],
        name="Alice",
        ttl=120,
        now=now,
    )
    claims = verify(SECRET, token)
    assert claims == Claims(
        identity="alice",
        room="r1",
        grants=frozenset({Grant.PUBLISH, Grant.CHAT}),
        name="Alice",
        expires_at=now + 120,
        issued_at=now,
    )


def test_claims_follow_the_design_names() -> None:
    token = mint(SECRET, room="r1", identity="bob", grants=["subscribe", "subscribe"], now=1000)
    payload = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert payload == {
        "sub": "bob",
        "room": "r1",
        "grants": ["subscribe"],
        "iat": 1000,
        "exp": 4600,
    }


def test_expired_token_is_401_token_expired() -> None:
    token = mint(
        SECRET, room="r1", identity="a", grants=["subscribe"], ttl=60, now=int(time.time()) - 3600
    )
    with pytest.raises(ApiError) as exc:
        verify(SECRET, token)
    _check(exc, 401, "token_expired")


def test_bad_signature_is_401() -> None:
    token = mint("another-secret", room="r1", identity="a", grants=["subscribe"])
    with pytest.raises(ApiError) as exc:
        verify(SECRET, token)
    _check(exc, 401, "invalid_token")


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c"])
def test_garbage_token_is_401(garbage: str) -> None:
    with pytest.raises(ApiError) as exc:
        verify(SECRET, garbage)
    _check(exc, 401, "invalid_token")


def test_token_without_room_is_401() -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    with pytest.raises(ApiError) as exc:
        verify(SECRET, token)
    _check(exc, 401, "invalid_token")


def test_wrong_room_is_403_wrong_room() -> None:
    token = mint(SECRET, room="r1", identity="a", grants=["publish"])
    with pytest.raises(ApiError) as exc:
        authorize(SECRET, f"Bearer {token}", grant=Grant.PUBLISH, room="r2")
    _check(exc, 403, "wrong_room")


def test_missing_grant_is_403_missing_grant() -> None:
    token = mint(SECRET, room="r1", identity="a", grants=["subscribe"])
    with pytest.raises(ApiError) as exc:
        authorize(SECRET, f"Bearer {token}", grant=Grant.PUBLISH, room="r1")
    _check(exc, 403, "missing_grant")


def test_authorize_returns_the_claims() -> None:
    token = mint(SECRET, room="r1", identity="a", grants=["publish"])
    claims = authorize(SECRET, f"Bearer {token}", grant=Grant.PUBLISH, room="r1")
    assert claims.identity == "a"


@pytest.mark.parametrize("grant", list(Grant))
def test_admin_carries_every_grant(grant: Grant) -> None:
    claims = verify(SECRET, mint(SECRET, room="r1", identity="ops", grants=["admin"]))
    claims.require(grant, "r1")


def test_admin_token_for_every_room() -> None:
    claims = verify(SECRET, mint(SECRET, room="*", identity="ops", grants=["admin"]))
    claims.require(Grant.PUBLISH, "any-room")


@pytest.mark.parametrize("grants", [["subscribe"], ["publish", "chat"], ["cohost"], []])
def test_only_admin_tokens_name_every_room(grants: list[str]) -> None:
    """README: only admin tokens may name ``*``; minting one is refused, and one signed by
    other means is refused at verify (so at every door), whatever grants it carries."""
    with pytest.raises(ValueError, match="only admin tokens"):
        mint(SECRET, room="*", identity="u", grants=grants)
    now = int(time.time())
    forged = jwt.encode({"sub": "u", "room": "*", "grants": grants, "iat": now,
                         "exp": now + 60}, SECRET, algorithm="HS256")
    with pytest.raises(ApiError) as exc:
        verify(SECRET, forged)
    _check(exc, 401, "invalid_token")
    with pytest.raises(ApiError) as exc:
        authorize(SECRET, f"Bearer {forged}", publish=False, room="r1")
    _check(exc, 401, "invalid_token")


def test_a_room_token_covers_its_room_only() -> None:
    """``covers``: a room token its own room; an admin token for ``*`` every room and acts on
    every room at once; a room admin never the latter."""
    room_admin = verify(SECRET, mint(SECRET, room="r1", identity="o", grants=["admin"]))
    root = verify(SECRET, mint(SECRET, room="*", identity="o", grants=["admin"]))
    assert room_admin.covers("r1") and not room_admin.covers("r2")
    assert not room_admin.covers("*")
    assert root.covers("r1") and root.covers("r2") and root.covers("*")
    with pytest.raises(ApiError) as exc:
        room_admin.require(Grant.ADMIN, "*")
    _check(exc, 403, "wrong_room")


def test_admin_does_not_cross_rooms() -> None:
    claims = verify(SECRET, mint(SECRET, room="r1", identity="ops", grants=["admin"]))
    with pytest.raises(ApiError) as exc:
        claims.require(Grant.SUBSCRIBE, "r2")
    _check(exc, 403, "wrong_room")


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token-only"])
def test_malformed_authorization_header_is_401(header: str) -> None:
    with pytest.raises(ApiError) as exc:
        bearer(header)
    _check(exc, 401, "missing_token")


def test_missing_authorization_is_401() -> None:
    with pytest.raises(ApiError) as exc:
        bearer(None)
    _check(exc, 401, "missing_token")


def test_bearer_scheme_is_case_insensitive_and_query_is_a_fallback() -> None:
    assert bearer("bearer abc") == "abc"
    assert bearer(None, "from-query") == "from-query"
    assert bearer("Bearer from-header", "from-query") == "from-header"


def test_unknown_grant_cannot_be_minted() -> None:
    with pytest.raises(ValueError):
        mint(SECRET, room="r1", identity="a", grants=["superuser"])


def test_unknown_grant_in_a_signed_token_is_401() -> None:
    token = jwt.encode(
        {"sub": "a", "room": "r1", "grants": ["superuser"], "exp": int(time.time()) + 60},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(ApiError) as exc:
        verify(SECRET, token)
    _check(exc, 401, "invalid_token")


def test_grants_must_be_a_list() -> None:
    token = jwt.encode(
        {"sub": "a", "room": "r1", "grants": "admin", "exp": int(time.time()) + 60},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(ApiError) as exc:
        verify(SECRET, token)
    _check(exc, 401, "invalid_token")


@pytest.mark.parametrize(("secret", "ttl"), [("", 60), (SECRET, 0), (SECRET, -1)])
def test_mint_refuses_a_missing_secret_or_a_non_positive_ttl(secret: str, ttl: int) -> None:
    with pytest.raises(ValueError):
        mint(secret, room="r1", identity="a", grants=["publish"], ttl=ttl)


def test_api_error_renders_the_json_body() -> None:
    with pytest.raises(ApiError) as exc:
        verify(SECRET, "nope")
    response = exc.value.to_response()
    assert response.status == 401
    assert response.content_type == "application/json"
    assert response.text is not None and '"code": "invalid_token"' in response.text
