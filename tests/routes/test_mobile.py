"""Native apps over real HTTP (RFC 8252): the system browser signs in, the app exchanges a one-time code.

Two clients play the two parts: the *system browser* (an httpx2 client with a cookie jar: it gets the
browser-binding cookie at /auth/login and sends it at /auth/callback) and the *app* (a client that refuses
every cookie and authenticates with ``Authorization: Session <token>`` only).
"""

from __future__ import annotations

import base64
import hashlib
import http.cookiejar
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import redis.asyncio as aioredis
from starlette.datastructures import QueryParams

from bff.errors import BadRequest
from bff.routes.mobile import parse_login
from bff.sessions.handoff import MobileLogin
from bff.sessions.manager import TOMBSTONE
from tests.support.clock import Clock
from tests.support.settings import minimal_settings
from tests.support.stack import MakeStack, Stack

APP_URI = "com.example.app:/oauth2redirect"
LINK_URI = "https://app.example.com/oauth/callback?via=bff"
CSRF = {"X-CSRF": "1"}


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def app_client(stack: Stack) -> httpx2.AsyncClient:
    # A native app's HTTP client: no cookie jar at all (a policy that accepts no domain).
    jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return stack.client(cookies=jar)


def session_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Session {token}"}


def start_params(challenge: str, *, redirect_uri: str = APP_URI, state: str = "app-state-1") -> dict[str, str]:
    return {
        "client": "mobile",
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": state,
    }


async def sign_in_in_browser(
    stack: Stack,
    browser: httpx2.AsyncClient,
    challenge: str,
    *,
    redirect_uri: str = APP_URI,
    state: str = "app-state-1",
    username: str = "guest",
) -> httpx2.Response:
    """The system-browser part: /auth/login → the emulator approves → /auth/callback. Returns the callback."""
    params = {**start_params(challenge, redirect_uri=redirect_uri, state=state), "login_hint": username}
    start = await browser.get(f"{stack.url}/auth/login", params=params)
    assert start.status_code == 302, start.text
    assert start.headers["location"].startswith(stack.emulator_config.issuer)
    approve = await browser.get(start.headers["location"])
    assert approve.status_code == 302, approve.text
    assert approve.headers["location"].startswith(f"{stack.url}/auth/callback?")
    return await browser.get(approve.headers["location"])


def app_redirect(response: httpx2.Response, redirect_uri: str = APP_URI) -> dict[str, str]:
    """The parameters of the hand-off redirect to the app's URI."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    base = redirect_uri.split("?", 1)[0]
    assert location.startswith(base + "?"), location
    query = parse_qs(urlsplit(location).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in query.values())
    return {k: v[0] for k, v in query.items()}


async def handoff_code(stack: Stack, challenge: str, **kwargs: Any) -> str:
    async with stack.client() as browser:
        return app_redirect(await sign_in_in_browser(stack, browser, challenge, **kwargs))["code"]


async def exchange(
    app: httpx2.AsyncClient, stack: Stack, code: str, verifier: str, redirect_uri: str = APP_URI
) -> httpx2.Response:
    fields = {"code": code, "code_verifier": verifier, "redirect_uri": redirect_uri}
    return await app.post(f"{stack.url}/auth/mobile/token", data=fields)


async def session_keys(redis_url: str) -> set[bytes]:
    """Keys of live sessions (an ended session leaves a short-lived tombstone, which holds nothing)."""
    r = aioredis.from_url(redis_url)
    try:
        return {key async for key in r.scan_iter(match="bff:{*}:session") if await r.get(key) != TOMBSTONE}
    finally:
        await r.aclose()


@pytest.fixture
def mobile_stack(make_stack: MakeStack) -> Stack:
    return make_stack(mobile_redirect_uris=[APP_URI, LINK_URI])


# --- parse_login on its own ------------------------------------------------------------------------------


def _parse(params: Mapping[str, str | list[str]], uris: tuple[str, ...] = (APP_URI, LINK_URI)) -> MobileLogin:
    settings = minimal_settings(mobile_redirect_uris=list(uris))
    items = [(k, v) for k, values in params.items() for v in ([values] if isinstance(values, str) else values)]
    return parse_login(QueryParams(items), settings)


def _refusal(params: Mapping[str, str | list[str]], uris: tuple[str, ...] = (APP_URI, LINK_URI)) -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        _parse(params, uris)
    return refused.value


def test_parse_login_returns_what_the_app_asked_for() -> None:
    _, challenge = pkce()
    assert _parse(start_params(challenge)) == MobileLogin(APP_URI, challenge, "app-state-1")
    linked = _parse({**start_params(challenge, redirect_uri=LINK_URI, state="~ a b ~"), "prompt": "none"})
    assert linked == MobileLogin(LINK_URI, challenge, "~ a b ~")
    # "none" as a whole prompt value only; other prompts are fine for a private-use scheme
    assert _parse({**start_params(challenge), "prompt": ["login", "consent nonesuch"]}).redirect_uri == APP_URI


def test_parse_login_is_off_without_redirect_uris() -> None:
    _, challenge = pkce()
    assert _refusal(start_params(challenge), uris=()).code == "mobile_disabled"


@pytest.mark.parametrize(
    "redirect_uri", ["", APP_URI + "/", APP_URI.upper(), LINK_URI.split("?")[0], "https://evil.example/"]
)
def test_parse_login_refuses_an_unregistered_redirect_uri_first(redirect_uri: str) -> None:
    # Checked before anything else: even with every other parameter wrong, the answer is not about them.
    refused = _refusal({"redirect_uri": redirect_uri, "code_challenge": "short", "code_challenge_method": "plain"})
    assert (refused.status, refused.code) == (400, "invalid_redirect_uri")


@pytest.mark.parametrize("name", ["redirect_uri", "code_challenge", "code_challenge_method", "state"])
def test_parse_login_refuses_repeated_parameters(name: str) -> None:
    _, challenge = pkce()
    params: dict[str, str | list[str]] = {**start_params(challenge)}
    params[name] = [start_params(challenge)[name]] * 2
    refused = _refusal(params)
    assert (refused.code, refused.extra) == ("invalid_request", {"parameter": name})


START_PARAMETER_CASES: list[tuple[dict[str, str | None], str]] = [
    ({"code_challenge_method": "plain"}, "code_challenge_method"),
    ({"code_challenge_method": ""}, "code_challenge_method"),
    ({"code_challenge": "A" * 42}, "code_challenge"),
    ({"code_challenge": "A" * 42 + "+"}, "code_challenge"),
    ({"state": ""}, "state"),
    ({"state": "a" * 513}, "state"),
    ({"state": "tab\there"}, "state"),
    ({"prompt": "none"}, "prompt"),
    ({"prompt": "login none"}, "prompt"),
]


async def test_start_parameters_are_checked(mobile_stack: Stack) -> None:
    _, challenge = pkce()
    async with mobile_stack.client() as browser:
        for change, parameter in START_PARAMETER_CASES:
            params: dict[str, str | None] = {**start_params(challenge), **change}
            r = await browser.get(
                f"{mobile_stack.url}/auth/login", params={k: v for k, v in params.items() if v is not None}
            )
            assert r.status_code == 400, (change, r.text)
            assert r.json()["code"] == "invalid_request", change
            assert r.json()["parameter"] == parameter, change
            assert "location" not in r.headers, change


async def test_repeated_parameters_and_unknown_clients_are_refused(mobile_stack: Stack) -> None:
    _, challenge = pkce()
    query = "&".join(f"{k}={v}" for k, v in start_params(challenge).items())
    async with mobile_stack.client() as browser:
        twice = await browser.get(f"{mobile_stack.url}/auth/login?{query}&redirect_uri=https://evil.example/")
        assert twice.status_code == 400 and twice.json()["code"] == "invalid_request"
        other = await browser.get(f"{mobile_stack.url}/auth/login", params={**start_params(challenge), "client": "x"})
        assert other.status_code == 400 and other.json()["code"] == "invalid_parameter"


async def test_silent_sign_in_is_refused_for_private_use_schemes(mobile_stack: Stack) -> None:
    # RFC 8252 §8.6: another app claiming com.example.app could start this itself and be approved silently.
    _, challenge = pkce()
    prompts: list[str | list[str]] = ["none", "none login", ["login", "none"]]
    async with mobile_stack.client() as browser:
        for prompt in prompts:
            r = await browser.get(
                f"{mobile_stack.url}/auth/login", params={**start_params(challenge), "prompt": prompt}
            )
            assert r.status_code == 400, (prompt, r.text)
            assert r.headers["content-type"] == "application/problem+json", prompt
            assert (r.json()["code"], r.json()["parameter"]) == ("invalid_request", "prompt"), prompt
            assert "location" not in r.headers, prompt


async def test_silent_sign_in_is_allowed_for_https_app_links_and_other_prompts(mobile_stack: Stack) -> None:
    _, challenge = pkce()
    async with mobile_stack.client() as browser:
        link = await browser.get(
            f"{mobile_stack.url}/auth/login",
            params={**start_params(challenge, redirect_uri=LINK_URI), "prompt": "none"},
        )
        assert link.status_code == 302, link.text
        assert "prompt=none" in link.headers["location"]
        login = await browser.get(
            f"{mobile_stack.url}/auth/login", params={**start_params(challenge), "prompt": "login"}
        )
        assert login.status_code == 302, login.text


async def test_mobile_sign_in_is_off_without_redirect_uris(stack: Stack) -> None:
    _, challenge = pkce()
    async with stack.client() as browser:
        r = await browser.get(f"{stack.url}/auth/login", params=start_params(challenge))
    assert r.status_code == 400
    assert r.json()["code"] == "mobile_disabled"
    assert "location" not in r.headers


# --- the callback ---------------------------------------------------------------------------------------


async def test_provider_error_goes_to_the_app_with_its_state(mobile_stack: Stack) -> None:
    stack = mobile_stack
    _, challenge = pkce()
    async with stack.client() as browser:
        start = await browser.get(f"{stack.url}/auth/login", params={**start_params(challenge), "login_hint": "guest"})
        approve = await browser.get(start.headers["location"])
        params = {k: v[0] for k, v in parse_qs(urlsplit(approve.headers["location"]).query).items()}
        # The person pressed "Deny" on the provider's page.
        r = await browser.get(
            f"{stack.url}/auth/callback",
            params={"state": params["state"], "error": "access_denied", "iss": params["iss"]},
        )
    assert r.status_code == 302
    assert r.headers["location"] == f"{APP_URI}?error=access_denied&state=app-state-1"


async def test_callback_in_another_browser_is_refused_not_handed_off(mobile_stack: Stack) -> None:
    stack = mobile_stack
    _, challenge = pkce()
    async with stack.client() as browser:
        start = await browser.get(f"{stack.url}/auth/login", params={**start_params(challenge), "login_hint": "guest"})
        approve = await browser.get(start.headers["location"])
    async with stack.client() as other_browser:
        r = await other_browser.get(approve.headers["location"])
    assert r.status_code == 400 and r.json()["code"] == "login_binding_mismatch"
    assert "location" not in r.headers


# --- the exchange ---------------------------------------------------------------------------------------


async def test_wrong_verifier_burns_the_code_and_deletes_the_session(mobile_stack: Stack, redis_url: str) -> None:
    stack = mobile_stack
    verifier, challenge = pkce()
    before = await session_keys(redis_url)
    code = await handoff_code(stack, challenge)
    assert len(await session_keys(redis_url) - before) == 1  # the session exists, waiting for the app
    async with app_client(stack) as app:
        wrong = await exchange(app, stack, code, pkce()[0])
        assert wrong.status_code == 400
        assert wrong.headers["content-type"] == "application/problem+json"
        assert wrong.json()["code"] == "invalid_grant"
        assert await session_keys(redis_url) - before == set()
        # Burned: the right verifier comes too late.
        again = await exchange(app, stack, code, verifier)
        assert again.status_code == 400 and again.json()["code"] == "invalid_grant"


async def test_malformed_verifier_is_a_wrong_verifier(mobile_stack: Stack) -> None:
    verifier, challenge = pkce()
    code = await handoff_code(mobile_stack, challenge)
    async with app_client(mobile_stack) as app:
        r = await exchange(app, mobile_stack, code, verifier + "\u00e9")
        assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
        assert (await exchange(app, mobile_stack, code, verifier)).json()["code"] == "invalid_grant"


async def test_other_redirect_uri_at_the_exchange_is_refused(mobile_stack: Stack, redis_url: str) -> None:
    stack = mobile_stack
    verifier, challenge = pkce()
    before = await session_keys(redis_url)
    code = await handoff_code(stack, challenge)
    async with app_client(stack) as app:
        for other in (LINK_URI, APP_URI + "/", APP_URI.upper()):
            r = await exchange(app, stack, code, verifier, redirect_uri=other)
            assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
        assert (await exchange(app, stack, code, verifier)).json()["code"] == "invalid_grant"
    assert await session_keys(redis_url) - before == set()


async def test_replayed_code_is_refused(mobile_stack: Stack) -> None:
    stack = mobile_stack
    verifier, challenge = pkce()
    code = await handoff_code(stack, challenge)
    async with app_client(stack) as app:
        first = await exchange(app, stack, code, verifier)
        assert first.status_code == 200
        replay = await exchange(app, stack, code, verifier)
        assert replay.status_code == 400 and replay.json()["code"] == "invalid_grant"
        assert "session_token" not in replay.text


async def test_expired_code_is_refused_and_its_session_deleted(make_stack: MakeStack, redis_url: str) -> None:
    clock = Clock()
    stack = make_stack(mobile_redirect_uris=[APP_URI], clock=clock)
    verifier, challenge = pkce()
    before = await session_keys(redis_url)
    code = await handoff_code(stack, challenge)
    clock.advance(61)
    async with app_client(stack) as app:
        r = await exchange(app, stack, code, verifier)
        assert r.status_code == 400 and r.json()["code"] == "invalid_grant"
    assert await session_keys(redis_url) - before == set()


async def test_unknown_code_and_malformed_requests(mobile_stack: Stack) -> None:
    stack = mobile_stack
    verifier, challenge = pkce()
    code = await handoff_code(stack, challenge)
    url = f"{stack.url}/auth/mobile/token"
    async with app_client(stack) as app:
        unknown = await exchange(app, stack, secrets.token_urlsafe(32), verifier)
        assert unknown.status_code == 400 and unknown.json()["code"] == "invalid_grant"
        bad_requests = [
            await app.post(url, data={"code": code, "code_verifier": verifier}),
            await app.post(url, json={"code": code, "code_verifier": verifier, "redirect_uri": 7}),
            await app.post(url, json=[code, verifier, APP_URI]),
            await app.post(url, content=b"{not json", headers={"Content-Type": "application/json"}),
            await app.post(url, content=f"code={code}".encode(), headers={"Content-Type": "text/plain"}),
            await app.post(url, data={"code": code, "code_verifier": verifier, "redirect_uri": "x" * 9000}),
        ]
        for r in bad_requests:
            assert r.status_code == 400, r.text
            assert r.json()["code"] == "invalid_request"
        # A request that could not name its fields burns nothing: the code still works.
        assert (await exchange(app, stack, code, verifier)).status_code == 200


# --- the session token and CSRF -------------------------------------------------------------------------


async def mobile_token(stack: Stack) -> str:
    verifier, challenge = pkce()
    code = await handoff_code(stack, challenge)
    async with app_client(stack) as app:
        got = await exchange(app, stack, code, verifier)
        assert got.status_code == 200, got.text
        token: str = got.json()["session_token"]
        return token


async def test_session_token_as_a_cookie_does_not_bypass_csrf(mobile_stack: Stack) -> None:
    stack = mobile_stack
    token = await mobile_token(stack)
    # Someone plants the session token as the cookie and calls from another origin, without X-CSRF.
    async with stack.client(cookies={stack.settings.session_cookie_name: token}) as attacker:
        r = await attacker.get(f"{stack.url}/api/v1/userinfo", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        r = await attacker.get(f"{stack.url}/auth/session")
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        r = await attacker.post(f"{stack.url}/auth/logout", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"
        r = await attacker.post(f"{stack.url}/auth/logout", headers={**CSRF, "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed"
        r = await attacker.post(f"{stack.url}/auth/logout")
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
        # Another Authorization scheme is not the Session header: the cookie path and its checks apply.
        r = await attacker.get(f"{stack.url}/api/v1/userinfo", headers={"Authorization": "Bearer x"})
        assert r.status_code == 403 and r.json()["code"] == "csrf_required"
    async with app_client(stack) as app:
        alive = await app.get(f"{stack.url}/auth/session", headers=session_header(token))
        assert alive.status_code == 200


async def test_cookie_authenticated_requests_still_need_x_csrf(mobile_stack: Stack) -> None:
    stack = mobile_stack
    async with stack.client() as browser:
        await stack.login(browser, "guest")
        assert (await browser.get(f"{stack.url}/api/v1/userinfo")).json()["code"] == "csrf_required"
        assert (await browser.get(f"{stack.url}/auth/session")).json()["code"] == "csrf_required"
        assert (await browser.post(f"{stack.url}/auth/logout")).json()["code"] == "csrf_required"
        assert (await browser.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200


INVALID_SESSION_HEADERS = [
    ["Session not-a-token"],
    ["Session"],
    ["session  x y"],
    ["Session a.b", "Session c.d"],
    ["Basic eA==", "Session x"],
]


async def test_invalid_session_header_never_falls_back_to_the_cookie(mobile_stack: Stack) -> None:
    stack = mobile_stack
    for authorization in INVALID_SESSION_HEADERS:
        async with stack.client() as browser:  # a new browser (and session) per header
            await stack.login(browser, "guest")
            assert (await browser.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
            headers = [("Authorization", value) for value in authorization]
            for path in ("/auth/session", "/api/v1/userinfo"):
                r = await browser.get(f"{stack.url}{path}", headers=[*headers, ("X-CSRF", "1")])
                assert r.status_code == 401, (authorization, path, r.text)
            r = await browser.post(f"{stack.url}/auth/logout", headers=headers)
            assert r.status_code == 200 and r.json()["logout_url"] is None, authorization
            # The cookie's session was not touched by that logout.
            assert (await browser.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200, authorization


async def test_session_scheme_is_case_insensitive(mobile_stack: Stack) -> None:
    token = await mobile_token(mobile_stack)
    async with app_client(mobile_stack) as app:
        r = await app.get(f"{mobile_stack.url}/auth/session", headers={"Authorization": f"session {token}"})
        assert r.status_code == 200
