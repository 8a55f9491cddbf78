"""OpenID Connect Back-Channel Logout 1.0 at POST /auth/backchannel-logout."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx2

from tests.support.idp_tamper import id_token_claims, publish_test_key, sign
from tests.support.stack import CLIENT_ID, Stack

CSRF = {"X-CSRF": "1"}
EVENT: dict[str, dict[str, Any]] = {"http://schemas.openid.net/event/backchannel-logout": {}}


async def _signed_in(stack: Stack, username: str) -> tuple[httpx2.AsyncClient, dict[str, Any]]:
    client = stack.client()
    await stack.login(client, username)
    return client, id_token_claims(stack.idp.token_responses()[-1]["id_token"])


async def _status(stack: Stack, client: httpx2.AsyncClient) -> int:
    return (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code


async def test_provider_logout_by_sid_ends_only_that_session(stack: Stack) -> None:
    a, a_claims = await _signed_in(stack, "guest")
    b, _ = await _signed_in(stack, "guest")  # same user, another provider session
    other, _ = await _signed_in(stack, "linked")
    try:
        result = await stack.emulator_control("POST", "backchannel-logout", json={"sid": a_claims["sid"]})
        assert [d["status"] for d in result["deliveries"]] == [200]
        assert await _status(stack, a) == 401
        assert await _status(stack, b) == 200
        assert await _status(stack, other) == 200
    finally:
        for c in (a, b, other):
            await c.aclose()


async def test_provider_logout_by_sub_ends_all_sessions_of_that_user(stack: Stack) -> None:
    a, claims = await _signed_in(stack, "guest")
    b, _ = await _signed_in(stack, "guest")
    other, _ = await _signed_in(stack, "linked")
    try:
        result = await stack.emulator_control("POST", "backchannel-logout", json={"sub": claims["sub"]})
        assert {d["status"] for d in result["deliveries"]} == {200}
        assert await _status(stack, a) == 401
        assert await _status(stack, b) == 401
        assert await _status(stack, other) == 200
    finally:
        for c in (a, b, other):
            await c.aclose()


def _claims(stack: Stack, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": stack.settings.issuer,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": str(uuid.uuid4()),
        "events": EVENT,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def _post(stack: Stack, token: str) -> httpx2.Response:
    async with httpx2.AsyncClient() as c:
        return await c.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": token})


async def test_a_valid_token_works_once_and_its_replay_is_refused(stack: Stack) -> None:
    stack.idp.rewriters.append(publish_test_key)
    client, claims = await _signed_in(stack, "guest")
    try:
        token = sign(_claims(stack, sub=claims["sub"], sid=claims["sid"]))
        ok = await _post(stack, token)
        assert ok.status_code == 200
        assert ok.headers["cache-control"] == "no-store"
        assert await _status(stack, client) == 401
        replay = await _post(stack, token)
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_request"
    finally:
        await client.aclose()


def _unsigned(claims: dict[str, Any]) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'logout+jwt'})}.{b64(claims)}."


INVALID_LOGOUT_TOKENS = [
    "wrong-aud",
    "wrong-iss",
    "nonce",
    "no-event",
    "no-sub-no-sid",
    "stale-iat",
    "expired",
    "no-jti",
    "unsigned",
    "unknown-key",
]


def _invalid_changes(case: str, now: int) -> dict[str, Any]:
    cases: dict[str, dict[str, Any]] = {
        "wrong-aud": {"aud": "another-client"},
        "wrong-iss": {"iss": "https://evil.example/oidc"},
        "nonce": {"nonce": "n-0S6_WzA2Mj"},
        "no-event": {"events": {"http://schemas.openid.net/event/other": {}}},
        "no-sub-no-sid": {"sub": None, "sid": None},
        "stale-iat": {"iat": now - 3600, "exp": now + 60},
        "expired": {"iat": now - 200, "exp": now - 100},
        "no-jti": {"jti": None},
        "unsigned": {},
        "unknown-key": {},
    }
    return cases[case]


async def test_invalid_logout_tokens_are_refused_and_change_nothing(stack: Stack) -> None:
    """One stack for every case: each case signs in a browser of its own and checks that session."""
    stack.idp.rewriters.append(publish_test_key)
    for case in INVALID_LOGOUT_TOKENS:
        client, claims = await _signed_in(stack, "guest")
        now = int(time.time())
        base = {"sub": claims["sub"], "sid": claims["sid"]}
        changes = _invalid_changes(case, now)
        payload = _claims(stack, **{**base, **changes})
        if case == "unsigned":
            token = _unsigned(payload)
        elif case == "unknown-key":
            token = sign(payload, kid="not-published")
        else:
            token = sign(payload)
        try:
            r = await _post(stack, token)
            assert r.status_code == 400, (case, r.text)
            assert r.json()["error"] == "invalid_request", (case, r.text)
            assert await _status(stack, client) == 200, case
        finally:
            await client.aclose()


async def test_an_id_token_is_not_a_logout_token(stack: Stack) -> None:
    client, _ = await _signed_in(stack, "guest")
    try:
        id_token = stack.idp.token_responses()[-1]["id_token"]
        r = await _post(stack, id_token)
        assert r.status_code == 400
        assert await _status(stack, client) == 200
    finally:
        await client.aclose()


async def test_backchannel_needs_no_csrf_header_but_a_form(stack: Stack) -> None:
    async with httpx2.AsyncClient() as c:
        r = await c.post(f"{stack.url}/auth/backchannel-logout", json={"logout_token": "x"})
        assert r.status_code == 400
        r = await c.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": "x"})
        assert r.status_code == 400  # reached the validator: not a CSRF refusal
        assert r.json()["code"] == "invalid_logout_token"


async def test_extra_form_fields_get_the_back_channel_error_shape(stack: Stack) -> None:
    async with httpx2.AsyncClient() as c:
        r = await c.post(
            f"{stack.url}/auth/backchannel-logout",
            content=b"logout_token=x&a=1&b=2&c=3&d=4",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_request"
