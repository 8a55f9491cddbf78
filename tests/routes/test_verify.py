"""``/auth/verify``, the external-authorization endpoint, over real HTTP against the emulator and Redis.

Here the test plays the ingress (a trusted peer on 127.0.0.1) and sends what nginx, Traefik/Caddy or Envoy
send; tests/ingress/ puts real nginx and Caddy in front. Every answer is checked for what it lets through
(the credentials) and what it costs (calls upstream, refreshes at the provider, writes to Redis).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis

from tests.support.connect import connect
from tests.support.processes import sign_in, start_cluster
from tests.support.redis_server import RedisServer, free_port
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}
TRUSTED = {"trusted_proxies": ["127.0.0.1/32"]}
INTEGRATIONS = "/api/v1/integrations?page=1&pageSize=25"


def nginx(method: str, uri: str, **headers: str) -> dict[str, str]:
    return {"X-Original-Method": method, "X-Original-URI": uri, **headers}


def traefik(method: str, uri: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, **headers}


async def ask(
    client: httpx2.AsyncClient, stack: Stack, headers: dict[str, str], method: str = "GET"
) -> httpx2.Response:
    return await client.request(method, f"{stack.verify_url}/auth/verify", headers=headers)


async def upstream_calls(stack: Stack) -> int:
    stats = await stack.emulator_control("GET", "stats")
    return int(stats["data_api"]) + int(stats["connect_api"])


def latest_access_token(stack: Stack) -> str:
    token: str = stack.idp.token_responses()[-1]["access_token"]
    return token


async def test_a_session_becomes_the_upstream_credentials_and_nothing_is_called(make_stack: MakeStack) -> None:
    stack = make_stack(**TRUSTED)
    async with stack.client() as browser:
        await stack.login(browser)
        before = await upstream_calls(stack)
        for style in (nginx, traefik):
            answer = await ask(browser, stack, style("GET", INTEGRATIONS, **CSRF))
            assert answer.status_code == 200, answer.text
            assert answer.headers["authorization"] == f"Bearer {latest_access_token(stack)}"
            assert answer.headers["x-client-id"] == stack.settings.client_id
            assert answer.headers["x-client-secret"] == stack.client_secret
            assert answer.headers["cache-control"] == "no-store"
            assert answer.content == b""
        # Envoy's ext_authz (path_prefix /auth/verify): the original method, and the path appended to ours.
        envoy = await browser.get(f"{stack.url}/auth/verify/api/v1/integrations?page=2", headers=CSRF)
        assert envoy.status_code == 200, envoy.text
        assert envoy.headers["authorization"] == f"Bearer {latest_access_token(stack)}"
        # Sources that agree are one request; Envoy's path next to a browser's X-Original-URI is two.
        agreeing = await ask(browser, stack, {**nginx("GET", INTEGRATIONS), **traefik("GET", INTEGRATIONS), **CSRF})
        assert agreeing.status_code == 200, agreeing.text
        mixed = await browser.get(
            f"{stack.url}/auth/verify/api/v1/integrations", headers={**CSRF, "X-Original-URI": "/api/v1/userinfo"}
        )
        assert mixed.status_code == 403 and mixed.json()["code"] == "original_request_unknown"
        assert await upstream_calls(stack) == before


async def test_only_a_trusted_proxy_may_ask(make_stack: MakeStack) -> None:
    # The answer carries the client secret: a browser (or anyone not in BFF_TRUSTED_PROXIES) asking directly,
    # even with a live session and X-Forwarded-For naming a trusted proxy, gets nothing.
    for settings in ({}, {"trusted_proxies": ["127.0.0.2/32"]}):
        stack = make_stack(**settings)
        async with stack.client() as browser:
            await stack.login(browser)
            for headers in (nginx("GET", INTEGRATIONS, **CSRF), {**CSRF, "X-Forwarded-For": "127.0.0.2"}):
                answer = await ask(browser, stack, headers)
                assert answer.status_code == 403, answer.text
                assert answer.json()["code"] == "untrusted_caller"
                assert stack.client_secret not in answer.text
                assert "authorization" not in answer.headers and "x-client-secret" not in answer.headers


async def test_without_a_session_it_is_401_and_after_logout_at_once(make_stack: MakeStack) -> None:
    stack = make_stack(**TRUSTED)
    async with stack.client() as browser:
        anonymous = await ask(browser, stack, nginx("GET", INTEGRATIONS, **CSRF))
        assert anonymous.status_code == 401
        assert anonymous.json()["code"] == "not_authenticated"
        await stack.login(browser)
        assert (await ask(browser, stack, nginx("GET", INTEGRATIONS, **CSRF))).status_code == 200
        cookie = browser.cookies[stack.settings.session_cookie_name]
        out = await browser.post(f"{stack.url}/auth/logout", headers=CSRF)
        assert out.status_code == 200
        ended = await ask(
            browser, stack, nginx("GET", INTEGRATIONS, **CSRF, Cookie=f"{stack.settings.session_cookie_name}={cookie}")
        )
        assert ended.status_code == 401
        assert ended.json()["code"] == "session_expired"
        assert "authorization" not in ended.headers


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (nginx("GET", INTEGRATIONS), "csrf_required"),  # the SPA's header, as on the proxy
        (
            nginx("PATCH", "/api/developer/grants/g1/transaction-limit", Origin="https://evil.example", **CSRF),
            "origin_not_allowed",
        ),
        (
            traefik("DELETE", "/api/v1/integrations", **CSRF),
            "route_not_allowed",
        ),  # a path in the table, not this method
        (nginx("GET", "/api/v1/accounts", **CSRF), "route_not_allowed"),  # not in the table at all
        (nginx("GET", "/api/v1/integrations%0A", **CSRF), "route_not_allowed"),  # a newline is not the end
        (nginx("GET", "/auth/session", **CSRF), "route_not_allowed"),  # bff's own endpoints are not API calls
        (nginx("HEAD", INTEGRATIONS, **CSRF), "route_not_allowed"),
        (nginx("GET", "/api/developer/grants", **CSRF), "forbidden"),  # admin-only, and the user is no admin
        (nginx("GET", "/api/v1/integrations?page=0", **CSRF), "invalid_parameter"),  # the proxy's 400
        (nginx("GET", "/api/v1/integrations?page=1&page=2", **CSRF), "invalid_parameter"),
        (nginx("GET", "/api/v1/integrations?admin=1", **CSRF), "invalid_parameter"),
        (nginx("GET", "/api/v1/integrations/../../api/developer/grants", **CSRF), "invalid_path"),
        (nginx("GET", "/api/v1/sync/a%2F..%2F..%2Fx", **CSRF), "invalid_path"),
        (nginx("POST", "/api/v1/integrations/a%20b/resync", **CSRF), "invalid_parameter"),
        ({**CSRF}, "original_request_unknown"),  # an ingress that forgot to say which request it asks for
        (nginx("GET", "http://evil.example/api/v1/integrations", **CSRF), "original_request_unknown"),
        (nginx("G{T", INTEGRATIONS, **CSRF), "original_request_unknown"),
        # A browser's own X-Original-* next to what Caddy or Traefik set (X-Forwarded-*): which one is true?
        (
            {**traefik("PATCH", "/api/developer/grants/g1/transaction-limit"), **nginx("GET", INTEGRATIONS), **CSRF},
            "original_request_unknown",
        ),
        ({**traefik("GET", "/api/v1/userinfo"), **nginx("GET", INTEGRATIONS), **CSRF}, "original_request_unknown"),
        ({**traefik("PATCH", INTEGRATIONS), "X-Original-Method": "GET", **CSRF}, "original_request_unknown"),
    ],
)
async def test_what_the_proxy_refuses_is_refused_with_403(
    make_stack: MakeStack, headers: dict[str, str], code: str
) -> None:
    stack = make_stack(**TRUSTED)
    async with stack.client() as browser:
        await stack.login(browser, username="guest")
        answer = await ask(browser, stack, headers)
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == code
        assert "authorization" not in answer.headers and "x-client-secret" not in answer.headers


async def test_admin_routes_get_the_client_headers_only(make_stack: MakeStack) -> None:
    stack = make_stack(**TRUSTED)
    async with stack.client() as admin:
        await stack.login(admin, username="admin")
        headers = nginx("PATCH", "/api/developer/grants/grant_1/transaction-limit", Origin=stack.url, **CSRF)
        answer = await ask(admin, stack, headers, method="PATCH")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-client-secret"] == stack.client_secret
        assert "authorization" not in answer.headers  # the client's own credentials, as the proxy sends


async def test_a_connect_grant_is_the_bearer(make_stack: MakeStack) -> None:
    stack = make_stack(**TRUSTED)
    async with stack.client() as browser:
        await connect(stack, browser)
        answer = await ask(browser, stack, nginx("GET", INTEGRATIONS, **CSRF))
        assert answer.status_code == 200, answer.text
        bearer = answer.headers["authorization"].removeprefix("Bearer ")
        # The grant's token serves the data API as the proxy would use it.
        async with httpx2.AsyncClient(timeout=10) as kryptos:
            data = await kryptos.get(
                f"{stack.emulator_config.data_api_url}/v1/integrations",
                headers={
                    "Authorization": f"Bearer {bearer}",
                    "X-Client-Id": answer.headers["x-client-id"],
                    "X-Client-Secret": answer.headers["x-client-secret"],
                },
            )
        assert data.status_code == 200, data.text
        assert bearer not in stack.idp.issued_secrets()  # not an OpenID Connect token: the browser never signed in


async def test_an_expired_token_is_refreshed_once_across_concurrent_asks_on_two_replicas(make_stack: MakeStack) -> None:
    stack = make_stack(**TRUSTED)
    other = stack.add_replica()
    async with stack.client() as browser:
        await stack.login(browser)
        stale = latest_access_token(stack)
        await stack.expire_access_token(browser.cookies[stack.settings.session_cookie_name])
        before = (await stack.emulator_control("GET", "stats"))["token"].get("refresh_token", {})
        headers = nginx("GET", INTEGRATIONS, **CSRF)
        answers = await asyncio.gather(
            *(browser.get(f"{url}/auth/verify", headers=headers) for url in [stack.url, other] * 4)
        )
        after = (await stack.emulator_control("GET", "stats"))["token"]["refresh_token"]
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    bearers = {a.headers["authorization"] for a in answers}
    assert len(bearers) == 1 and bearers != {f"Bearer {stale}"}
    assert sum(after.values()) - sum(before.values()) == 1  # one redeem of the refresh token, not eight
    assert after.get("reuse", 0) == before.get("reuse", 0)


def _writes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    reads = {
        "get",
        "mget",
        "exists",
        "ping",
        "info",
        "ttl",
        "pttl",
        "hget",
        "hgetall",
        "zscore",
        "hello",
        "client|setinfo",
    }
    calls = {name: int(after[name]["calls"]) - int(before.get(name, {}).get("calls", 0)) for name in after}
    return {
        name.removeprefix("cmdstat_"): n
        for name, n in calls.items()
        if n and name.removeprefix("cmdstat_") not in reads
    }


async def test_asking_writes_nothing(make_stack: MakeStack) -> None:
    server = RedisServer().start()  # commandstats are per server: a private one, so no other test's writes count
    try:
        stack = make_stack(redis_url=server.url, **TRUSTED)
        r = aioredis.from_url(server.url)
        try:
            async with stack.client() as browser:
                await stack.login(browser)
                before = await r.info("commandstats")
                for _ in range(25):
                    answer = await ask(browser, stack, nginx("GET", INTEGRATIONS, **CSRF))
                    assert answer.status_code == 200
                after = await r.info("commandstats")
        finally:
            await r.aclose()
        assert _writes(before, after) == {}
    finally:
        server.stop()


async def test_with_a_verify_port_the_main_port_never_answers_verify(make_stack: MakeStack) -> None:
    # The ingress is a trusted peer also when it relays a browser's own GET /auth/verify through an ordinary
    # route: with BFF_VERIFY_PORT that request meets the main port, which does not serve it.
    stack = make_stack(verify_port=free_port(), **TRUSTED)
    async with stack.client() as browser:
        await stack.login(browser)
        for url in (f"{stack.url}/auth/verify", f"{stack.url}/auth/verify/api/v1/integrations"):
            relayed = await browser.get(url, headers=nginx("GET", INTEGRATIONS, **CSRF))
            assert relayed.status_code == 404, relayed.text
            assert relayed.json()["code"] == "not_found"
            assert "authorization" not in relayed.headers and stack.client_secret not in relayed.text
        asked = await ask(browser, stack, nginx("GET", INTEGRATIONS, **CSRF))
        assert asked.status_code == 200, asked.text
        assert asked.headers["x-client-secret"] == stack.client_secret


@pytest.mark.slow
async def test_bff_serve_listens_on_the_verify_port_in_every_worker(redis_url: str) -> None:
    cluster = start_cluster(redis_url, replicas=0, BFF_TRUSTED_PROXIES="127.0.0.1/32")
    try:
        verify_port = free_port()
        replica = cluster.start_replica(workers=2, BFF_VERIFY_PORT=str(verify_port))
        async with httpx2.AsyncClient(timeout=15) as browser:
            cookie = await sign_in(browser, replica)
            headers = {"Cookie": f"bff-session={cookie}", **nginx("GET", INTEGRATIONS, **CSRF)}
            main = await browser.get(f"{replica.url}/auth/verify", headers=headers)
            assert main.status_code == 404, main.text
            # Several calls on fresh connections, so both workers' copies of the socket answer.
            for _ in range(6):
                async with httpx2.AsyncClient(timeout=15) as ingress:
                    asked = await ingress.get(f"http://127.0.0.1:{verify_port}/auth/verify", headers=headers)
                assert asked.status_code == 200, asked.text
                assert asked.headers["x-client-id"] == cluster.env["BFF_CLIENT_ID"]
    finally:
        cluster.stop()


async def test_a_native_apps_session_header_is_a_session_and_needs_no_csrf_header(make_stack: MakeStack) -> None:
    # Authorization: Session <token> (bff.routes.mobile) authenticates alone, never with a cookie, and is
    # not ambient authority: no X-CSRF needed, as on the proxy. The token is the same signed id as the cookie.
    stack = make_stack(**TRUSTED)
    async with stack.client() as browser:
        await stack.login(browser)
        token = browser.cookies[stack.settings.session_cookie_name]
    async with stack.client() as app:
        answer = await ask(app, stack, nginx("GET", INTEGRATIONS, Authorization=f"Session {token}"))
        assert answer.status_code == 200, answer.text
        assert answer.headers["authorization"] == f"Bearer {latest_access_token(stack)}"
        forged = await ask(app, stack, nginx("GET", INTEGRATIONS, Authorization=f"Session {token}x"))
        assert forged.status_code == 401
        assert "authorization" not in forged.headers
