"""External authorization through real ingress software (README: "External authorization").

nginx (``auth_request``) and Caddy (``forward_auth``) with the README's configurations
(``nginx.conf.template``, ``Caddyfile.template``) ask bff's ``/auth/verify`` before each API call and carry
the call to Kryptos (here a recording server) themselves. Each test counts what reached Kryptos and what the
provider was asked, not only the statuses the browser saw.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from typing import Any

import httpx2
import pytest

from bff_dev.emulator.config import default_users
from tests.ingress.conftest import CONNECT_API_PATH, CSRF, DATA_API_PATH, Deploy, Deployment
from tests.support.stack import CLIENT_ID, MakeStack

LIMIT_PATH = "/api/developer/grants/g1/transaction-limit"


def _problem(response: httpx2.Response, status: int, code: str) -> None:
    """The browser got bff's own problem+json refusal (relayed by the ingress, not the ingress's error page)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    assert response.json()["code"] == code, response.text


def _no_credentials(deployment: Deployment, response: httpx2.Response) -> None:
    """Nothing of bff's answer to the ingress reached the browser: no token, no client secret."""
    secret = deployment.stack.client_secret
    assert "x-client-secret" not in response.headers
    assert all(secret not in value for value in response.headers.values())
    assert secret not in response.text
    assert not any(token in response.text for token in deployment.stack.idp.issued_secrets())


async def test_without_a_session_nothing_reaches_kryptos(deploy: Deploy) -> None:
    deployment = deploy()
    async with deployment.browser() as browser:
        anonymous = await browser.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        _problem(anonymous, 401, "not_authenticated")
        forged = await browser.get(
            f"{deployment.url}/api/v1/integrations", headers={**CSRF, "Cookie": "bff-session=forged.value"}
        )
        _problem(forged, 401, "not_authenticated")
        _no_credentials(deployment, anonymous)
    assert deployment.upstream.requests == []


async def test_a_signed_in_call_reaches_kryptos_with_the_sessions_credentials(deploy: Deploy) -> None:
    deployment = deploy()
    async with deployment.browser() as browser:
        await deployment.sign_in(browser)
        answer = await browser.get(
            f"{deployment.url}/api/v1/integrations",
            params={"page": "2", "pageSize": "5"},
            headers={**CSRF, "Authorization": "Bearer forged", "X-Client-Secret": "forged"},
        )
        assert answer.status_code == 200, deployment.output()
        assert answer.json() == {"upstream": True, "path": f"{DATA_API_PATH}/v1/integrations"}
        assert "set-cookie" not in answer.headers  # Kryptos's cookie stays at the ingress
        _no_credentials(deployment, answer)

        # The SPA's own checks still hold: no X-CSRF, no call.
        without_csrf = await browser.get(f"{deployment.url}/api/v1/userinfo")
        _problem(without_csrf, 403, "csrf_required")
        # Nor anything outside the route table, nor a refused parameter.
        unknown = await browser.get(f"{deployment.url}/api/v1/users", headers=CSRF)
        _problem(unknown, 403, "route_not_allowed")
        bad_query = await browser.get(f"{deployment.url}/api/v1/integrations?pageSize=100000", headers=CSRF)
        _problem(bad_query, 403, "invalid_parameter")

    [call] = deployment.upstream.requests
    assert (call.method, call.path, call.query) == ("GET", f"{DATA_API_PATH}/v1/integrations", "page=2&pageSize=5")
    [token] = deployment.access_tokens()
    assert call.header("authorization") == [f"Bearer {token}"]
    assert call.header("x-client-id") == [CLIENT_ID]
    assert call.header("x-client-secret") == [deployment.stack.client_secret]
    assert call.header("cookie") == []  # the session cookie never reaches Kryptos
    assert deployment.refreshes() == 0


async def test_after_logout_the_next_call_is_refused_before_kryptos(deploy: Deploy) -> None:
    deployment = deploy()
    async with deployment.browser() as browser:
        cookie = await deployment.sign_in(browser)
        first = await browser.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        assert first.status_code == 200, deployment.output()
        # Logout through the ingress, as the SPA does on its own origin: bff also clears the cookie.
        out = await browser.post(f"{deployment.url}/auth/logout", headers=deployment.origin_headers)
        assert out.status_code == 200, out.text
        after = await browser.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        _problem(after, 401, "not_authenticated")
    # The old cookie, kept by another tab or a thief, names a session that has ended.
    async with httpx2.AsyncClient(timeout=15) as replay:
        replayed = await replay.get(
            f"{deployment.url}/api/v1/userinfo",
            headers={**CSRF, "Cookie": f"{deployment.stack.settings.session_cookie_name}={cookie}"},
        )
        _problem(replayed, 401, "session_expired")
    assert [r.path for r in deployment.upstream.requests] == [f"{DATA_API_PATH}/v1/userinfo"]


async def test_an_admin_call_carries_the_client_headers_and_no_bearer(deploy: Deploy) -> None:
    """The admin routes use the client's credentials only: bff's answer has no Authorization, and the
    browser's own (forged) one must not reach Kryptos either (Caddy's ``copy_headers`` deletes it;
    nginx's ``proxy_set_header`` with an empty value sends none)."""
    deployment = deploy()
    async with deployment.browser() as browser:
        await deployment.sign_in(browser, "admin")
        answer = await browser.patch(
            f"{deployment.url}{LIMIT_PATH}",
            content=b'{"transactionLimit":5000}',
            headers={
                **deployment.origin_headers,
                "Content-Type": "application/json",
                "Authorization": "Bearer forged",
                "X-Client-Secret": "forged",
            },
        )
        assert answer.status_code == 200, deployment.output()
        listed = await browser.get(f"{deployment.url}/api/developer/grants", headers=CSRF)
        assert listed.status_code == 200, listed.text
    patch, grants = deployment.upstream.requests
    assert (patch.method, patch.path) == ("PATCH", f"{CONNECT_API_PATH}/developer/grants/g1/transaction-limit")
    assert patch.body == b'{"transactionLimit":5000}'
    assert (grants.method, grants.path) == ("GET", f"{CONNECT_API_PATH}/token/grants")
    for call in (patch, grants):
        assert call.header("authorization") == []
        assert call.header("x-client-id") == [CLIENT_ID]
        assert call.header("x-client-secret") == [deployment.stack.client_secret]
        assert call.header("cookie") == []


async def test_a_state_change_from_a_foreign_origin_never_reaches_kryptos(deploy: Deploy) -> None:
    deployment = deploy()
    async with deployment.browser() as browser:
        await deployment.sign_in(browser, "admin")
        foreign = await browser.patch(
            f"{deployment.url}{LIMIT_PATH}",
            json={"transactionLimit": 1},
            headers={**CSRF, "Origin": "https://evil.example"},
        )
        _problem(foreign, 403, "origin_not_allowed")
    async with deployment.browser() as guest:
        await deployment.sign_in(guest, "guest")
        not_admin = await guest.patch(
            f"{deployment.url}{LIMIT_PATH}", json={"transactionLimit": 1}, headers=deployment.origin_headers
        )
        _problem(not_admin, 403, "forbidden")
    assert deployment.upstream.requests == []


async def test_the_browser_cannot_choose_the_request_bff_judges(deploy: Deploy) -> None:
    """The ingress names the original request to bff in headers (nginx: X-Original-*, Caddy: X-Forwarded-*);
    the browser sending either set itself must not make bff judge another call than the one forwarded (here a
    guest's admin-only PATCH dressed up as a GET of its own userinfo)."""
    deployment = deploy()
    disguise = {
        "X-Original-URI": "/api/v1/userinfo",
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": "/api/v1/userinfo",
        "X-Forwarded-Method": "GET",
    }
    async with deployment.browser() as guest:
        await deployment.sign_in(guest, "guest")
        disguised = await guest.patch(
            f"{deployment.url}{LIMIT_PATH}",
            json={"transactionLimit": 1},
            headers={**deployment.origin_headers, **disguise},
        )
        # Caddy drops the browser's X-Original-* and names the real PATCH, which a guest may not make; behind
        # nginx the browser's X-Forwarded-* disagree with what nginx names, and bff will not guess.
        _problem(disguised, 403, "forbidden" if deployment.kind == "caddy" else "original_request_unknown")
    assert deployment.upstream.requests == []


@pytest.mark.parametrize(
    "path", ["/auth/verify", "/auth/verify/api/v1/userinfo", "/auth//verify", "/auth/%76erify", "/auth/./verify"]
)
async def test_the_browser_cannot_ask_verify_through_the_ingress(deploy: Deploy, path: str) -> None:
    """bff trusts the ingress's address, so a browser reaching /auth/verify *through* the ingress would be
    answered as the ingress is: with the session's access token and the client secret. The ingress refuses."""
    deployment = deploy()
    async with deployment.browser() as browser:
        await deployment.sign_in(browser)
        asked = await browser.get(
            f"{deployment.url}{path}",
            headers={**CSRF, "X-Original-URI": "/api/v1/userinfo", "X-Original-Method": "GET"},
        )
        _no_credentials(deployment, asked)
        assert asked.status_code == 404, asked.headers
        assert "authorization" not in asked.headers
    assert deployment.upstream.requests == []


async def test_an_expired_token_is_refreshed_once_for_concurrent_calls(deploy: Deploy) -> None:
    # No process-local session cache: the test rewrites the stored session behind bff's back.
    deployment = deploy(session_cache_seconds=0)
    calls = 8
    async with deployment.browser() as browser:
        cookie = await deployment.sign_in(browser)
        [old_token] = deployment.access_tokens()
        await deployment.stack.expire_access_token(cookie)
        answers = await asyncio.gather(
            *(browser.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF) for _ in range(calls))
        )
    assert [a.status_code for a in answers] == [200] * calls, [a.text for a in answers]
    assert deployment.refreshes() == 1
    new_token = deployment.access_tokens()[-1]
    assert new_token != old_token
    assert len(deployment.upstream.requests) == calls
    assert {tuple(r.header("authorization")) for r in deployment.upstream.requests} == {(f"Bearer {new_token}",)}


async def test_only_a_trusted_proxy_may_ask_verify(make_stack: MakeStack) -> None:
    """bff trusts 127.0.0.1/32 (the ingress); a caller from 127.0.0.2 with a valid session gets 403 and none
    of the credentials, while the same question from the trusted address gets them."""
    stack = make_stack(trusted_proxies=["127.0.0.1/32"])
    question = {**CSRF, "X-Original-URI": "/api/v1/userinfo", "X-Original-Method": "GET"}
    async with stack.client() as browser:
        await stack.login(browser)
        cookie = {
            "Cookie": f"{stack.settings.session_cookie_name}={browser.cookies[stack.settings.session_cookie_name]}"
        }
    outsider = httpx2.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx2.AsyncClient(transport=outsider, timeout=15) as client:
        refused = await client.get(
            f"{stack.url}/auth/verify", headers={**question, **cookie, "X-Forwarded-For": "127.0.0.1"}
        )
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "untrusted_caller"
    assert stack.client_secret not in refused.text
    assert "x-client-secret" not in refused.headers and "authorization" not in refused.headers
    async with httpx2.AsyncClient(timeout=15) as ingress:
        answered = await ingress.get(f"{stack.url}/auth/verify", headers={**question, **cookie})
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-client-secret"] == stack.client_secret
    assert answered.headers["cache-control"] == "no-store"
    assert answered.content == b""


def _users_of_this_test() -> dict[str, Any]:
    """Settings for ``deploy``: the seeded users under subjects of this test alone (Redis is shared by the
    whole run, and a user's index would otherwise list the sessions other tests signed that user into), the
    admin among ``BFF_ADMIN_SUBJECTS``."""
    tag = secrets.token_hex(4)
    users = [replace(user, sub=f"{user.sub}_{tag}") for user in default_users()]
    admin = next(user.sub for user in users if user.username == "admin")
    return {"emulator_options": {"users": users}, "admin_subjects": [admin]}


async def test_the_admins_session_routes_stay_on_bff(deploy: Deploy) -> None:
    """``/api/admin/...`` are bff's own routes, not Kryptos calls (``/auth/verify`` answers them 403
    ``route_not_allowed``): the ingress sends them to bff, which applies its own rules, and nothing reaches
    Kryptos. ``/auth/sessions`` is under ``/auth``, which goes to bff anyway."""
    settings = _users_of_this_test()
    [admin_sub] = settings["admin_subjects"]
    deployment = deploy(**settings)
    async with deployment.browser() as guest, deployment.browser() as admin:
        await deployment.sign_in(guest, "guest")
        await deployment.sign_in(admin, "admin")
        me = await guest.get(f"{deployment.url}/auth/session", headers=CSRF)
        sub = me.json()["user"]["sub"]
        own = await guest.get(f"{deployment.url}/auth/sessions", headers=CSRF)
        assert own.status_code == 200, deployment.output()
        [mine] = own.json()["sessions"]
        assert mine["current"] is True

        listed = await admin.get(f"{deployment.url}/api/admin/users/{sub}/sessions", headers=CSRF)
        assert listed.status_code == 200, deployment.output()
        assert listed.headers["cache-control"] == "no-store"
        assert listed.json() == {"sub": sub, "sessions": [{**mine, "current": False}]}
        _no_credentials(deployment, listed)

        not_admin = await guest.get(f"{deployment.url}/api/admin/users/{admin_sub}/sessions", headers=CSRF)
        _problem(not_admin, 403, "forbidden")
        without_csrf = await admin.get(f"{deployment.url}/api/admin/users/{sub}/sessions")
        _problem(without_csrf, 403, "csrf_required")

        # Force sign-out through the ingress: the guest's next API call is refused before Kryptos.
        ended = await admin.delete(
            f"{deployment.url}/api/admin/users/{sub}/sessions", headers=deployment.origin_headers
        )
        assert ended.status_code == 200, ended.text
        assert ended.json() == {"sub": sub, "ended": 1}
        after = await guest.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        _problem(after, 401, "session_expired")
        still = await admin.get(f"{deployment.url}/api/admin/users/{sub}/sessions", headers=CSRF)
        assert still.json() == {"sub": sub, "sessions": []}
    assert deployment.upstream.requests == []


async def test_a_user_ends_their_other_sessions_through_the_ingress(deploy: Deploy) -> None:
    deployment = deploy(**_users_of_this_test())
    async with deployment.browser() as laptop, deployment.browser() as phone:
        await deployment.sign_in(laptop, "guest")
        await deployment.sign_in(phone, "guest")
        listed = await laptop.get(f"{deployment.url}/auth/sessions", headers=CSRF)
        assert listed.status_code == 200, deployment.output()
        assert [s["current"] for s in listed.json()["sessions"]] == [True, False]
        ended = await laptop.post(f"{deployment.url}/auth/sessions/end-others", headers=deployment.origin_headers)
        assert ended.status_code == 200, ended.text
        assert ended.json() == {"ended": 1}
        refused = await phone.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        _problem(refused, 401, "session_expired")
        kept = await laptop.get(f"{deployment.url}/api/v1/userinfo", headers=CSRF)
        assert kept.status_code == 200, kept.text
    assert [r.path for r in deployment.upstream.requests] == [f"{DATA_API_PATH}/v1/userinfo"]
