"""The whole sign-in flow over real HTTP: bff ⇄ emulator ⇄ a client with a cookie jar, against real Redis."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis

from bff.logs import JsonFormatter, quiet_library_loggers
from bff.sessions.manager import TOMBSTONE, TOMBSTONE_TTL
from bff.sessions.store import session_key
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}


async def test_login_session_logout_round_trip(stack: Stack, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    # Logging as in production (library HTTP loggers quiet), everything of our own at DEBUG.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bff")
    quiet_library_loggers()
    async with stack.client() as client:
        final = await stack.login(client, "guest", return_to="/after?tab=1")
        assert final.status_code == 302
        assert final.headers["location"] == "/after?tab=1"
        assert final.headers["referrer-policy"] == "no-referrer"
        cookie_name = stack.settings.session_cookie_name
        set_cookie = final.headers["set-cookie"]
        assert set_cookie.startswith(f"{cookie_name}=")
        assert "HttpOnly" in set_cookie and "Path=/" in set_cookie and "samesite=lax" in set_cookie.lower()
        assert "Domain" not in set_cookie

        info = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert info.status_code == 200
        # Not no-referrer: that makes browsers send `Origin: null` on the SPA's own POSTs.
        assert info.headers["referrer-policy"] == "same-origin"
        assert info.headers["x-content-type-options"] == "nosniff"
        body = info.json()
        assert body["authenticated"] is True
        assert body["user"]["preferred_username"] == "guest"
        assert body["is_admin"] is False
        assert "openid" in body["scopes"]
        assert body["logout_url"].startswith("/auth/logout?sid=")
        assert 0 < body["expires_in"] <= stack.settings.session_idle_timeout
        # The browser never sees a token.
        issued = stack.idp.issued_secrets()
        assert issued and not any(token in info.text for token in issued)

        session_id = stack.services.session_codec.unsign(client.cookies[cookie_name])
        assert session_id is not None
        r = aioredis.from_url(redis_url)
        try:
            assert await r.exists(session_key(session_id)) == 1
            tokens = stack.idp.token_responses()[-1]
            assert (await stack.introspect(tokens["access_token"]))["active"] is True

            out = await client.post(f"{stack.url}/auth/logout", headers={**CSRF, "Origin": stack.url})
            assert out.status_code == 200
            assert out.json()["logout_url"].startswith(stack.emulator_config.issuer + "/session/end?")
            assert f'{cookie_name}=""' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
            # RFC 7009 revocation at logout: both tokens dead at the provider; the record is gone.
            assert (await stack.introspect(tokens["access_token"]))["active"] is False
            assert (await stack.introspect(tokens["refresh_token"]))["active"] is False
            # The record is gone: a short-lived tombstone holds its place (no token, nothing to decrypt).
            assert await r.get(session_key(session_id)) == TOMBSTONE
            assert 0 < await r.ttl(session_key(session_id)) <= TOMBSTONE_TTL
        finally:
            await r.aclose()
        after = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert after.status_code == 401
        assert after.json()["code"] == "not_authenticated"

    # No secret, token or cookie value in any log record of the whole flow.
    secrets_seen = stack.idp.issued_secrets() | {
        stack.client_secret,
        stack.settings.session_secrets[0].get_secret_value(),
        stack.settings.encryption_keys[0].get_secret_value(),
        session_id,
    }
    formatter = JsonFormatter()
    for record in caplog.records:
        rendered = formatter.format(record) + " " + record.getMessage() + " " + repr(record.args)
        for secret in secrets_seen:
            assert secret not in rendered, f"a secret leaked into log record {record.name}: {record.msg}"
    assert any(r.name == "bff.access" for r in caplog.records)


async def test_session_id_changes_at_login_and_old_id_is_dead(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client, "guest")
        cookie_name = stack.settings.session_cookie_name
        first = client.cookies[cookie_name]
        await stack.login(client, "linked")
        second = client.cookies[cookie_name]
        assert first != second
        me = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert me.json()["user"]["preferred_username"] == "linked"
    # The pre-login id (planted by an attacker, or the previous session) is not accepted afterwards.
    async with stack.client(cookies={cookie_name: first}) as attacker:
        r = await attacker.get(f"{stack.url}/auth/session", headers=CSRF)
        assert r.status_code == 401


async def test_planted_session_cookie_is_replaced_at_login(stack: Stack) -> None:
    cookie_name = stack.settings.session_cookie_name
    async with stack.client() as victim:
        await stack.login(victim, "guest")
        planted = victim.cookies[cookie_name]
    async with stack.client() as client:
        client.cookies.set(cookie_name, planted, domain="127.0.0.1", path="/")
        await stack.login(client, "linked")
        assert client.cookies[cookie_name] != planted
    async with stack.client(cookies={cookie_name: planted}) as again:
        assert (await again.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401


async def test_parallel_logins_in_two_tabs_both_complete(stack: Stack) -> None:
    async with stack.client() as client:
        cb1, _ = await stack.authorize(client, "guest")
        cb2, _ = await stack.authorize(client, "guest")
        r2 = await client.get(cb2)
        r1 = await client.get(cb1)
        assert r1.status_code == 302 and r1.headers["location"] == "/"
        assert r2.status_code == 302 and r2.headers["location"] == "/"


async def test_memory_store_runs_the_same_flow(make_stack: MakeStack) -> None:
    stack = make_stack(store="memory")
    async with stack.client() as client:
        await stack.login(client, "admin")
        me = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert me.status_code == 200 and me.json()["is_admin"] is True


async def test_idp_error_goes_back_to_the_spa(stack: Stack) -> None:
    async with stack.client() as client:
        start = await client.get(f"{stack.url}/auth/login")
        # The person pressed "Deny" on the provider's page.
        _, params = await stack.authorize(client, "guest")
        del start
        r = await client.get(
            f"{stack.url}/auth/callback",
            params={"state": params["state"], "error": "access_denied", "iss": params["iss"]},
        )
        assert r.status_code == 302
        assert r.headers["location"] == "/?login_error=access_denied"
        assert stack.settings.session_cookie_name not in client.cookies
