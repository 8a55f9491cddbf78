"""The Kryptos Connect widget flow through bff (bff.routes.connect), against the emulator and a real Redis.

Each test counts what happened where it matters: grants Kryptos lists, requests Kryptos saw, keys in Redis.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis

from bff.logs import JsonFormatter, quiet_library_loggers
from bff.sessions.store import CONNECT_LAST_USE_KEY, connect_grant_id_key, connect_grant_key
from tests.support.connect import (
    CSRF,
    connect,
    emulator_grants,
    emulator_requests,
    revoke_at_kryptos,
    widget_public_token,
)
from tests.support.stack import MakeStack, Stack

INTEGRATIONS = "/api/v1/integrations"


def _grant_cookie(client: httpx2.AsyncClient, stack: Stack) -> str | None:
    return client.cookies.get(stack.settings.connect_cookie_name)


async def _grant_id_for(stack: Stack, workspace_id: str) -> str:
    grants = [g for g in await emulator_grants(stack) if g["workspace_id"] == workspace_id]
    assert len(grants) == 1, grants
    grant_id: str = grants[0]["grant_id"]
    return grant_id


async def test_a_guest_connects_and_the_token_stays_on_the_server(
    make_stack: MakeStack, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bff")
    quiet_library_loggers()
    stack = make_stack()
    before = len(await emulator_grants(stack))
    seen: list[httpx2.Response] = []

    async def keep(response: httpx2.Response) -> None:
        await response.aread()
        seen.append(response)

    async with stack.client(event_hooks={"response": [keep]}) as browser:
        link = await browser.post(f"{stack.url}/connect/link-token", headers=CSRF)
        assert link.status_code == 200
        assert set(link.json()) == {"link_token", "isAuthorized"}  # exactly what generateLinkToken expects
        assert link.json()["isAuthorized"] is False
        assert link.headers["cache-control"] == "no-store"
        public_token = await widget_public_token(stack, link.json()["link_token"])
        exchanged = await browser.post(
            f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": public_token}
        )
        assert exchanged.status_code == 200, exchanged.text
        body = exchanged.json()
        assert body["connected"] is True and body["workspace_id"].startswith("ws_guest_")
        assert "integrations:read" in body["scopes"]
        # A new session (the usual cookie) and the grant cookie: HttpOnly, SameSite=Strict.
        cookies = exchanged.headers.get_list("set-cookie")
        grant_cookie = next(c for c in cookies if c.startswith(stack.settings.connect_cookie_name + "="))
        assert "HttpOnly" in grant_cookie and "samesite=strict" in grant_cookie.lower() and "Path=/" in grant_cookie
        assert any(c.startswith(stack.settings.session_cookie_name + "=") for c in cookies)

        status = await browser.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json() == {
            "connected": True,
            "workspace_id": body["workspace_id"],
            "workspace_name": "Guest workspace",
            "scopes": body["scopes"],
        }
        data = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert data.status_code == 200, data.text
        items = data.json()["data"]
        assert items and any(item.get("limitExceeded") for item in items)  # limits apply to this Guest
        # The Guest is not signed in with OpenID Connect.
        assert (await browser.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401

    grants = await emulator_grants(stack)
    assert len(grants) == before + 1
    grant_id = await _grant_id_for(stack, body["workspace_id"])
    # Kryptos minted one token; find it through the emulator's records to look for it everywhere.
    state = stack.emulator.app.state.emulator
    token = next(t for t, gid in state.connect_tokens.items() if gid == grant_id)
    assert token.startswith("cat_")
    for response in seen:
        exposed = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        assert token not in exposed and stack.client_secret not in exposed and grant_id not in exposed

    r = aioredis.from_url(redis_url)
    try:
        stored_handle = await r.get(connect_grant_id_key(grant_id))
        assert isinstance(stored_handle, bytes)
        handle = stored_handle.decode()
        record = await r.get(connect_grant_key(handle))
        assert record is not None and token.encode() not in record and b"cat_" not in record
        assert await r.zscore(CONNECT_LAST_USE_KEY, f"{handle} {grant_id}") is not None
        async for key in r.scan_iter(match="bff:*", count=1000):  # nowhere in this Redis, in clear
            kind = await r.type(key)
            values: list[object] = []
            if kind == b"string":
                values = [await r.get(key)]
            elif kind == b"hash":
                values = [*(await r.hgetall(key)).values(), *(await r.hkeys(key))]
            elif kind == b"zset":
                values = list(await r.zrange(key, 0, -1))
            assert all(token.encode() not in v for v in values if isinstance(v, bytes)), key
    finally:
        await r.aclose()
    formatter = JsonFormatter()
    for log_record in caplog.records:
        rendered = formatter.format(log_record) + " " + log_record.getMessage() + " " + repr(log_record.args)
        assert token not in rendered and "cat_" not in rendered, log_record.msg
        assert stack.client_secret not in rendered
    assert any(rec.name == "bff.connect" and rec.getMessage() == "connect grant stored" for rec in caplog.records)


async def test_a_public_token_is_exchanged_once(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        link = await browser.post(f"{stack.url}/connect/link-token", headers=CSRF)
        public_token = await widget_public_token(stack, link.json()["link_token"])
        first = await browser.post(f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": public_token})
        assert first.status_code == 200
        grants_after_first = len(await emulator_grants(stack))

    async with stack.client() as other:  # the same public token, replayed from elsewhere
        replay = await other.post(f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": public_token})
        assert replay.status_code == 400
        assert replay.headers["content-type"] == "application/problem+json"
        assert replay.json()["code"] == "public_token_used"
        assert "set-cookie" not in replay.headers  # no session, no grant cookie: nothing half-written
    assert len(await emulator_grants(stack)) == grants_after_first


async def test_an_expired_or_malformed_public_token_is_a_clear_400(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        link = await browser.post(f"{stack.url}/connect/link-token", headers=CSRF)
        public_token = await widget_public_token(stack, link.json()["link_token"])
        await stack.emulator_control("POST", "advance-clock", json={"seconds": 31 * 60})  # public tokens: 30 min
        expired = await browser.post(f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": public_token})
        assert expired.status_code == 400 and expired.json()["code"] == "public_token_expired"

        exchanges = await emulator_requests(stack, "/token/exchange")
        for bad in ({"public_token": "public_x y"}, {"public_token": 5}, {}, ["public_x"], {"public_token": "p" * 600}):
            r = await browser.post(f"{stack.url}/connect/exchange", headers=CSRF, json=bad)
            assert r.status_code == 400, bad
            assert r.json()["code"] in ("invalid_public_token", "invalid_body"), r.text
        not_json = await browser.post(
            f"{stack.url}/connect/exchange", headers={**CSRF, "Content-Type": "text/plain"}, content=b"public_x"
        )
        assert not_json.status_code == 400 and not_json.json()["code"] == "invalid_body"
        assert await emulator_requests(stack, "/token/exchange") == exchanges  # none reached Kryptos
        assert "set-cookie" not in not_json.headers


async def test_a_returning_browser_is_authorized_without_a_new_public_token(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        body = await connect(stack, browser)
        grant_cookie = _grant_cookie(browser, stack)
        assert grant_cookie
    exchanges = await emulator_requests(stack, "/token/exchange")

    # Later: the session is gone (another day), the grant cookie is still there.
    async with stack.client() as returning:
        returning.cookies.set(stack.settings.connect_cookie_name, grant_cookie)
        link = await returning.post(f"{stack.url}/connect/link-token", headers=CSRF)
        assert link.status_code == 200 and link.json()["isAuthorized"] is True
        assert stack.settings.session_cookie_name in returning.cookies  # a new session uses the grant
        data = await returning.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert data.status_code == 200
    async with stack.client() as returning:
        returning.cookies.set(stack.settings.connect_cookie_name, grant_cookie)
        status = await returning.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is True and status.json()["workspace_id"] == body["workspace_id"]
        assert (await returning.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).status_code == 200
    assert await emulator_requests(stack, "/token/exchange") == exchanges  # no new public token was needed

    # A forged or foreign grant cookie is nothing.
    async with stack.client() as forger:
        forger.cookies.set(stack.settings.connect_cookie_name, grant_cookie[:-2] + "xx")
        link = await forger.post(f"{stack.url}/connect/link-token", headers=CSRF)
        assert link.json()["isAuthorized"] is False
        assert (await forger.get(f"{stack.url}/connect/status", headers=CSRF)).json()["connected"] is False
        assert stack.settings.session_cookie_name not in forger.cookies


async def test_status_is_cached_briefly(make_stack: MakeStack) -> None:
    stack = make_stack(connect_status_cache_seconds=30)
    async with stack.client() as browser:
        await connect(stack, browser)
        before = await emulator_requests(stack, "/link-token/check-session")
        for _ in range(5):
            assert (await browser.get(f"{stack.url}/connect/status", headers=CSRF)).json()["connected"] is True
        assert await emulator_requests(stack, "/link-token/check-session") == before + 1


async def test_disconnect_ends_the_grant_on_every_replica_at_once(make_stack: MakeStack, redis_url: str) -> None:
    stack = make_stack(session_cache_seconds=30)
    second = stack.add_replica()
    async with stack.client() as browser:
        body = await connect(stack, browser)
        grant_id = await _grant_id_for(stack, body["workspace_id"])
        # Both replicas serve the session (cookies are per host, not per port); the second caches it.
        for url in (stack.url, second):
            assert (await browser.get(f"{url}{INTEGRATIONS}", headers=CSRF)).status_code == 200
        data_calls = await emulator_requests(stack, "/v1/integrations")

        done = await browser.post(f"{stack.url}/connect/disconnect", headers=CSRF)
        assert done.status_code == 200 and done.json() == {"connected": False}
        assert _grant_cookie(browser, stack) is None
        assert grant_id not in {g["grant_id"] for g in await emulator_grants(stack)}  # revoked at Kryptos

        revoked = await browser.get(f"{second}{INTEGRATIONS}", headers=CSRF)
        assert revoked.status_code == 401 and revoked.json()["code"] == "connect_revoked"
        assert await emulator_requests(stack, "/v1/integrations") == data_calls  # refused without a call
        # The Connect-only session had nothing else to serve: it ended.
        after = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert after.status_code == 401 and after.json()["code"] == "session_expired"
    r = aioredis.from_url(redis_url)
    try:
        assert await r.get(connect_grant_id_key(grant_id)) is None
    finally:
        await r.aclose()


async def test_a_grant_revoked_at_kryptos_is_dropped_on_the_next_call(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        body = await connect(stack, browser)
        grant_id = await _grant_id_for(stack, body["workspace_id"])
        await revoke_at_kryptos(stack, grant_id)
        checks = await emulator_requests(stack, "/link-token/check-session")
        r = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert r.status_code == 401 and r.json()["code"] == "connect_revoked"
        assert await emulator_requests(stack, "/link-token/check-session") == checks + 1  # asked before forgetting
        status = await browser.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is False


async def test_a_401_that_kryptos_does_not_confirm_keeps_the_grant(make_stack: MakeStack) -> None:
    # A wrong client secret on the data API answers 401 too: that must never cost the Guests their grants.
    stack = make_stack()
    async with stack.client() as browser:
        await connect(stack, browser)
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"status": 401, "count": 1}})
        r = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert r.status_code == 502 and r.json()["code"] == "connect_failed"
        again = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert again.status_code == 200


async def test_an_administrator_revokes_a_guests_grant(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as guest, stack.client() as admin:
        body = await connect(stack, guest)
        grant_id = await _grant_id_for(stack, body["workspace_id"])
        await stack.login(admin, "admin")

        not_admin = await guest.post(f"{stack.url}/api/developer/grants/{grant_id}/revoke", headers=CSRF)
        assert not_admin.status_code == 403
        no_csrf = await admin.post(f"{stack.url}/api/developer/grants/{grant_id}/revoke")
        assert no_csrf.status_code == 403 and no_csrf.json()["code"] == "csrf_required"
        bad_id = await admin.post(f"{stack.url}/api/developer/grants/a.b/revoke", headers=CSRF)
        assert bad_id.status_code == 400 and bad_id.json()["code"] == "invalid_parameter"

        revoked = await admin.post(f"{stack.url}/api/developer/grants/{grant_id}/revoke", headers=CSRF)
        assert revoked.status_code == 200 and revoked.json() == {"revoked": True, "grant_id": grant_id}
        assert grant_id not in {g["grant_id"] for g in await emulator_grants(stack)}
        calls = await emulator_requests(stack, "/v1/integrations")
        out = await guest.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert out.status_code == 401 and out.json()["code"] == "connect_revoked"
        assert await emulator_requests(stack, "/v1/integrations") == calls
        again = await admin.post(f"{stack.url}/api/developer/grants/{grant_id}/revoke", headers=CSRF)
        assert again.status_code == 404 and again.json()["code"] == "not_found"


async def test_the_grant_list_shows_what_limit_answers_taught(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as guest, stack.client() as admin:
        body = await connect(stack, guest)
        grant_id = await _grant_id_for(stack, body["workspace_id"])
        await stack.login(admin, "admin")

        def known(listing: httpx2.Response, gid: str) -> dict[str, Any]:
            entry = next(g for g in listing.json()["data"]["grants"] if g["grant_id"] == gid)
            facts: dict[str, Any] = entry["known"]
            return facts

        listing = await admin.get(f"{stack.url}/api/developer/grants", headers=CSRF)
        assert listing.status_code == 200
        assert known(listing, grant_id) == {"kind": None, "transaction_limit": None, "enable_limiter": None}
        raised = await admin.patch(
            f"{stack.url}/api/developer/grants/{grant_id}/transaction-limit",
            headers=CSRF,
            json={"transactionLimit": 50_000},
        )
        assert raised.status_code == 200, raised.text
        linked = await admin.patch(
            f"{stack.url}/api/developer/grants/cgrant_linked_lena/transaction-limit",
            headers=CSRF,
            json={"transactionLimit": 10},
        )
        assert linked.status_code == 400 and linked.json()["code"] == "NOT_ANON_USER"  # Kryptos's answer, as is
        listing = await admin.get(f"{stack.url}/api/developer/grants", headers={**CSRF, "Accept-Encoding": "gzip"})
        assert known(listing, grant_id) == {"kind": "guest", "transaction_limit": 50_000, "enable_limiter": True}
        assert known(listing, "cgrant_linked_lena")["kind"] == "linked"
        assert listing.json()["data"]["count"] == len(listing.json()["data"]["grants"])


async def test_resync_and_sync_routes_validate_and_forward(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        await connect(stack, browser)
        items = (await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).json()["data"]
        wallet = items[0]["walletId"]
        calls = await emulator_requests(stack, "/resync")
        for bad in ("a.b", "x" * 129, "%2e%2e"):
            r = await browser.post(f"{stack.url}/api/v1/integrations/{bad}/resync", headers=CSRF)
            assert r.status_code in (400, 404), bad
        body = await browser.post(f"{stack.url}/api/v1/integrations/{wallet}/resync", headers=CSRF, json={"x": 1})
        assert body.status_code == 400 and body.json()["code"] == "invalid_body"
        assert await emulator_requests(stack, "/resync") == calls
        started = await browser.post(f"{stack.url}/api/v1/integrations/{wallet}/resync", headers=CSRF)
        assert started.status_code == 202, started.text
        job = started.json()["data"]["job_id"]
        polled = await browser.get(f"{stack.url}/api/v1/sync/{job}", headers=CSRF)
        assert polled.status_code == 200 and polled.json()["data"]["job_id"] == job


async def test_connect_calls_need_csrf_and_the_own_origin(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        calls = await emulator_requests(stack, "/link-token")
        for path in ("/connect/link-token", "/connect/exchange", "/connect/disconnect"):
            r = await browser.post(f"{stack.url}{path}")
            assert r.status_code == 403 and r.json()["code"] == "csrf_required", path
            r = await browser.post(f"{stack.url}{path}", headers={**CSRF, "Origin": "https://evil.example"})
            assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed", path
        assert (await browser.get(f"{stack.url}/connect/status")).status_code == 403
        assert await emulator_requests(stack, "/link-token") == calls


async def test_link_tokens_are_rate_limited_per_address(make_stack: MakeStack) -> None:
    stack = make_stack(rate_limit_connect=3)
    async with stack.client() as browser:
        answers = [(await browser.post(f"{stack.url}/connect/link-token", headers=CSRF)).status_code for _ in range(5)]
        assert answers[:3] == [200, 200, 200] and answers[3:] == [429, 429]
        refused = await browser.post(f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": "public_x"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert await emulator_requests(stack, "/link-token") == 3


async def test_a_signed_in_user_finds_the_grant_on_another_browser(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as first:
        await stack.login(first, "linked")
        body = await connect(stack, first)
        grant_cookie = _grant_cookie(first, stack)
        assert grant_cookie
    async with stack.client() as elsewhere:  # no cookies from the first browser
        await stack.login(elsewhere, "linked")
        status = await elsewhere.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is True and status.json()["workspace_id"] == body["workspace_id"]
    async with stack.client() as someone_else:  # another user holding the first browser's grant cookie
        await stack.login(someone_else, "guest")
        someone_else.cookies.set(stack.settings.connect_cookie_name, grant_cookie)
        status = await someone_else.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is False  # bound to "linked": not theirs
        link = await someone_else.post(f"{stack.url}/connect/link-token", headers=CSRF)
        assert link.json()["isAuthorized"] is False


async def test_a_native_app_connects_with_its_session_token_and_gets_no_cookies(make_stack: MakeStack) -> None:
    from tests.routes.test_mobile import APP_URI, app_client, mobile_token, session_header

    stack = make_stack(mobile_redirect_uris=[APP_URI])
    token = await mobile_token(stack)  # signed in as "guest" through the system browser
    async with app_client(stack) as app:
        bad = await app.post(f"{stack.url}/connect/link-token", headers=session_header("forged.token"))
        assert bad.status_code == 401 and bad.json()["code"] == "not_authenticated"
        link = await app.post(f"{stack.url}/connect/link-token", headers=session_header(token))
        assert link.status_code == 200 and "set-cookie" not in link.headers
        public_token = await widget_public_token(stack, link.json()["link_token"])
        exchanged = await app.post(
            f"{stack.url}/connect/exchange", headers=session_header(token), json={"public_token": public_token}
        )
        assert exchanged.status_code == 200 and "set-cookie" not in exchanged.headers
        workspace = exchanged.json()["workspace_id"]
        # Data calls now use the Connect grant (the new Guest workspace), not the app user's OIDC token.
        data = await app.get(f"{stack.url}{INTEGRATIONS}", headers=session_header(token))
        assert data.status_code == 200 and data.json()["user_id"] != "anon_7f3a9c21"
        again = await app.post(f"{stack.url}/connect/link-token", headers=session_header(token))
        assert again.json()["isAuthorized"] is True  # the app's session holds the grant
    async with stack.client() as browser:  # the same user in a browser finds the grant bound to them
        await stack.login(browser, "guest")
        status = await browser.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is True and status.json()["workspace_id"] == workspace


async def test_an_exchange_whose_session_fails_still_hands_out_the_grant_cookie(make_stack: MakeStack) -> None:
    from bff.errors import SessionStoreUnavailable

    stack = make_stack()
    service = stack.services.connect

    async def store_gone(*args: object, **kwargs: object) -> tuple[str, bool]:
        raise SessionStoreUnavailable("gone")

    async with stack.client() as browser:
        link = await browser.post(f"{stack.url}/connect/link-token", headers=CSRF)
        public_token = await widget_public_token(stack, link.json()["link_token"])
        original = service.attach
        service.attach = store_gone  # type: ignore[method-assign]  # the fault: the session cannot take the grant
        try:
            r = await browser.post(f"{stack.url}/connect/exchange", headers=CSRF, json={"public_token": public_token})
        finally:
            service.attach = original  # type: ignore[method-assign]
        assert r.status_code == 503 and r.json()["code"] == "session_store_unavailable"
        assert _grant_cookie(browser, stack)  # the grant is not stranded: this browser can still reach it
        status = await browser.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is True
        assert (await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).status_code == 200


async def test_after_disconnect_a_signed_in_user_uses_their_own_token_again(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        await stack.login(browser, "linked")
        await connect(stack, browser)
        with_grant = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert with_grant.json()["user_id"] != "user_lena_5c1d9e"  # the connected Guest workspace's data
        await browser.post(f"{stack.url}/connect/disconnect", headers=CSRF)
        own = await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)
        assert own.status_code == 200 and own.json()["user_id"] == "user_lena_5c1d9e"


async def test_a_dead_grant_cookie_is_cleared(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        body = await connect(stack, browser)
        await revoke_at_kryptos(stack, await _grant_id_for(stack, body["workspace_id"]))
        status = await browser.get(f"{stack.url}/connect/status", headers=CSRF)
        assert status.json()["connected"] is False
        assert any(
            c.startswith(stack.settings.connect_cookie_name + "=") and "Max-Age=0" in c
            for c in status.headers.get_list("set-cookie")
        )
        assert _grant_cookie(browser, stack) is None


async def test_logout_of_a_connect_only_session_keeps_the_grant(make_stack: MakeStack) -> None:
    stack = make_stack()
    async with stack.client() as browser:
        await connect(stack, browser)
        revocations = await emulator_requests(stack, "/token/revocation")
        out = await browser.post(f"{stack.url}/auth/logout", headers=CSRF)
        assert out.status_code == 200 and out.json() == {"logout_url": None}  # nobody signed in at the provider
        assert await emulator_requests(stack, "/token/revocation") == revocations
        assert (await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).status_code == 401
        # The grant outlived the session: the grant cookie brings it back.
        assert (await browser.get(f"{stack.url}/connect/status", headers=CSRF)).json()["connected"] is True
        assert (await browser.get(f"{stack.url}{INTEGRATIONS}", headers=CSRF)).status_code == 200
