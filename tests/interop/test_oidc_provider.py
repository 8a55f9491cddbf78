"""The BFF against a certified OpenID provider (node ``oidc-provider``), end to end over real HTTP.

Each test is one scenario of the interop matrix: client authentication, PKCE, refresh-token rotation with
reuse detection, short access tokens, offline_access, the RFC 9207 ``iss`` parameter, signing-key
rotation, revocation at logout, RP-initiated and back-channel logout. Access tokens live a few seconds,
so waiting for one to run out is a short real sleep (nothing to await: time has to pass).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc import jwt

from tests.interop.conftest import CLIENT_ID, SHORT_AT_TTL, InteropStack
from tests.interop.peers import ACCOUNTS, private_jwks, signing_key

pytestmark = pytest.mark.slow


def _jwt_part(token: str, index: int) -> dict[str, Any]:
    """A JWT's header (0) or claims (1), unverified."""
    segment = token.split(".")[index]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def _refreshes(stack: InteropStack, mark: int) -> list[httpx2.Request]:
    return [r for r in stack.token_requests(mark) if b"grant_type=refresh_token" in r.content]


def _form(request: httpx2.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


async def _call_until_refreshed(stack: InteropStack, client: httpx2.AsyncClient, mark: int) -> httpx2.Response:
    """API calls until the BFF has refreshed on the path (due at the latest when the token expires)."""
    deadline = time.monotonic() + SHORT_AT_TTL + 3
    before = len(_refreshes(stack, mark))
    while True:
        response = await stack.integrations(client)
        if len(_refreshes(stack, mark)) > before or response.status_code != 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.3)


async def _confirm_provider_logout(stack: InteropStack, client: httpx2.AsyncClient, url: str) -> httpx2.Response:
    """Open the provider's end-session page and confirm "sign out" the way its form does."""
    page = await client.get(url)
    assert page.status_code == 200, page.text
    action = re.search(r'<form id="op.logoutForm" method="post" action="([^"]+)"', page.text)
    xsrf = re.search(r'name="xsrf" value="([^"]+)"', page.text)
    assert action and xsrf, page.text
    return await client.post(action.group(1), data={"xsrf": xsrf.group(1), "logout": "yes"})


async def _login_works_with_method(stack: InteropStack, username: str, method: str) -> None:
    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, username)
        me = await stack.session(client)
        assert me.status_code == 200
        assert me.json()["user"]["sub"] == ACCOUNTS[username].sub
        # The refresh and the revocation authenticate the same way as the code exchange.
        assert (await _call_until_refreshed(stack, client, mark)).status_code == 200
        assert (await stack.logout(client)).status_code == 200
    authenticated = [
        r for r, _ in stack.idp.exchanges[mark:] if r.url.path in ("/oidc/token", "/oidc/token/revocation")
    ]
    paths = {r.url.path for r in authenticated}
    assert paths == {"/oidc/token", "/oidc/token/revocation"}
    assert len(_refreshes(stack, mark)) >= 1
    for request in authenticated:
        basic = request.headers.get("authorization", "").startswith("Basic ")
        assert basic is (method == "client_secret_basic")
        assert ("client_secret" in _form(request)) is (method == "client_secret_post")


# (1)
async def test_client_secret_post(post_stack: InteropStack) -> None:
    await _login_works_with_method(post_stack, "alice", "client_secret_post")


# (2)
async def test_client_secret_basic(basic_stack: InteropStack) -> None:
    await _login_works_with_method(basic_stack, "bob", "client_secret_basic")


# (3)
async def test_pkce_is_required_and_the_verifier_checked(post_stack: InteropStack) -> None:
    stack = post_stack
    async with stack.client() as client:
        start = await client.get(f"{stack.url}/auth/login", params={"login_hint": "carol", "prompt": "consent"})
        query = parse_qs(urlsplit(start.headers["location"]).query)
        assert query["code_challenge_method"] == ["S256"]
        assert len(query["code_challenge"][0]) == 43
        callback = await stack.follow_provider(client, start)
        code = parse_qs(urlsplit(callback).query)["code"][0]

        # Without the verifier the provider refuses the code; a code-stealing attacker is stuck here.
        stolen = await stack.provider_token(
            {"grant_type": "authorization_code", "code": code, "redirect_uri": stack.settings.redirect_uri}
        )
        assert stolen.status_code == 400
        assert stolen.json()["error"] == "invalid_grant"
        # The same code with the BFF's verifier works: the refusal was about the verifier alone.
        done = await client.get(callback)
        assert done.status_code == 302 and done.headers["location"] == "/"
        assert (await stack.session(client)).json()["user"]["preferred_username"] == "carol"

    # An authorization request without a code challenge is refused outright.
    async with httpx2.AsyncClient(timeout=10) as c:
        plain = await c.get(
            stack.provider.endpoint("/auth"),
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": stack.settings.redirect_uri,
                "response_type": "code",
                "scope": "openid",
                "state": "s",
            },
        )
    assert plain.status_code == 303
    error = parse_qs(urlsplit(plain.headers["location"]).query)
    assert error["error"] == ["invalid_request"]
    assert "PKCE" in error["error_description"][0]


# (4)
async def test_refresh_token_rotation_with_reuse_detection(post_stack: InteropStack) -> None:
    stack = post_stack
    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, "dave")
        first = stack.token_responses(mark)[0]["refresh_token"]
        assert (await _call_until_refreshed(stack, client, mark)).status_code == 200
        rotated = stack.token_responses(mark)[-1]
        assert rotated["refresh_token"] != first  # rotation on

        # Someone replays the rotated-out refresh token: the provider refuses it and revokes the grant.
        replay = await stack.provider_token({"grant_type": "refresh_token", "refresh_token": first})
        assert replay.status_code == 400
        assert replay.json()["error"] == "invalid_grant"
        assert (await stack.introspect(rotated["refresh_token"]))["active"] is False
        assert (await stack.introspect(rotated["access_token"]))["active"] is False

        # So the BFF's next refresh (or its retry after the data API's 401) is refused: the session ends.
        await asyncio.sleep(0.1)
        expired = await _call_until_refreshed(stack, client, len(stack.idp.exchanges))
        assert expired.status_code == 401
        assert expired.json()["code"] == "session_expired"
        assert (await stack.session(client)).status_code == 401
    # The BFF itself never sent a refresh token twice: one lost race would have done the same damage.
    sent = [_form(r)["refresh_token"] for r in _refreshes(stack, mark)]
    assert len(sent) == len(set(sent)) >= 2


# (5)
async def test_short_access_tokens_are_refreshed_on_the_path(post_stack: InteropStack) -> None:
    stack = post_stack
    mark, seen = len(stack.idp.exchanges), len(stack.data_api.calls)
    async with stack.client() as client:
        await stack.login(client, "erin")
        login_token = stack.token_responses(mark)[0]["access_token"]
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 2 * SHORT_AT_TTL + 0.5:
            statuses.append((await stack.integrations(client)).status_code)
            await asyncio.sleep(0.6)
    assert set(statuses) == {200}
    assert len(_refreshes(stack, mark)) >= 2
    calls = stack.data_api.since(seen)
    # Every token the data API saw was active, and it never had to answer 401 (no refresh-after-failure).
    assert len(calls) == len(statuses)
    assert all(call.active and call.status == 200 for call in calls)
    assert len({call.token for call in calls}) >= 3
    assert (await stack.introspect(login_token))["active"] is False  # well past the first token's lifetime


# (6)
async def test_offline_access_only_with_prompt_consent(post_stack: InteropStack) -> None:
    stack = post_stack
    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, "frank", prompt="consent")
        granted = stack.token_responses(mark)[0]
        assert "offline_access" in granted["scope"].split()
        assert granted["refresh_token"]
        assert "offline_access" in (await stack.session(client)).json()["scopes"]

    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, "frank", prompt=None)
        logged_in = time.monotonic()
        dropped = stack.token_responses(mark)[0]
        assert "offline_access" not in dropped["scope"].split()
        assert "refresh_token" not in dropped
        # No refresh token: the session lives as long as its access token, not a moment longer.
        early = await stack.integrations(client)
        assert early.status_code == 200, early.text
        await asyncio.sleep(max(0.0, logged_in + dropped["expires_in"] + 0.3 - time.monotonic()))
        late = await stack.integrations(client)
        assert late.status_code == 401
        assert late.json()["code"] == "session_expired"
        assert (await stack.session(client)).status_code == 401
    assert _refreshes(stack, mark) == []


# (7)
async def test_iss_authorization_response_parameter(post_stack: InteropStack) -> None:
    stack = post_stack
    async with stack.client() as client:
        callback, params = await stack.authorize(client, "grace")
        assert params["iss"] == stack.provider.issuer
        tampered = re.sub(r"iss=[^&]+", "iss=http%3A%2F%2F127.0.0.1%3A9%2Foidc", callback)
        assert tampered != callback
        refused = await client.get(tampered)
        assert refused.status_code == 400
        assert refused.json()["code"] == "issuer_mismatch"

        # The provider advertises the parameter, so an answer without it is refused as well.
        callback, _ = await stack.authorize(client, "grace")
        refused = await client.get(re.sub(r"&?iss=[^&]+", "", callback))
        assert refused.status_code == 400
        assert refused.json()["code"] == "issuer_mismatch"
        assert (await stack.session(client)).status_code == 401

        callback, _ = await stack.authorize(client, "grace")
        assert (await client.get(callback)).status_code == 302
        assert (await stack.session(client)).status_code == 200


# (8)
async def test_signing_key_rotation_while_sessions_exist(make_interop_stack: Callable[..., InteropStack]) -> None:
    k1, k2, k3 = signing_key("rotation-1"), signing_key("rotation-2"), signing_key("rotation-3")
    stack = make_interop_stack(keys=private_jwks(k1))

    def jwks_fetches() -> int:
        return sum(r.url.path == "/oidc/jwks" for r, _ in stack.idp.exchanges)

    def last_kid() -> str:
        return str(_jwt_part(stack.token_responses()[-1]["id_token"], 0)["kid"])

    async with stack.client() as alice, stack.client() as bob, stack.client() as carol:
        await stack.login(alice, "alice")
        assert last_kid() == "rotation-1"
        fetched = jwks_fetches()

        # New key first, the old one still published.
        stack.provider.restart(private_jwks(k2, k1))
        mark = len(stack.idp.exchanges)
        await stack.login(bob, "bob")
        assert last_kid() == "rotation-2"
        assert (await stack.session(bob)).json()["user"]["preferred_username"] == "bob"
        assert jwks_fetches() == fetched + 1  # the unknown kid made the BFF fetch the JWKS once
        assert (await _call_until_refreshed(stack, alice, mark)).status_code == 200
        assert len(_refreshes(stack, mark)) >= 1  # alice's grant survived the restart

        # A new key alone: the old one dropped.
        stack.provider.restart(private_jwks(k3))
        mark = len(stack.idp.exchanges)
        await stack.login(carol, "carol")
        assert last_kid() == "rotation-3"
        assert jwks_fetches() == fetched + 2
        assert (await stack.session(carol)).json()["user"]["preferred_username"] == "carol"
        for client in (alice, bob):
            assert (await _call_until_refreshed(stack, client, len(stack.idp.exchanges))).status_code == 200
            assert (await stack.session(client)).status_code == 200
        assert len(_refreshes(stack, mark)) >= 2


# (9)
async def test_logout_revokes_both_tokens(post_stack: InteropStack) -> None:
    stack = post_stack
    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, "heidi")
        tokens = stack.token_responses(mark)[-1]
        assert (await stack.introspect(tokens["access_token"]))["active"] is True
        assert (await stack.introspect(tokens["refresh_token"]))["active"] is True
        out = await stack.logout(client)
        assert out.status_code == 200
        assert (await stack.session(client)).status_code == 401
    assert (await stack.introspect(tokens["access_token"]))["active"] is False
    assert (await stack.introspect(tokens["refresh_token"]))["active"] is False
    revoked = [_form(r) for r, _ in stack.idp.exchanges[mark:] if r.url.path == "/oidc/token/revocation"]
    assert {f["token_type_hint"] for f in revoked} == {"refresh_token", "access_token"}


# (10)
async def test_rp_initiated_logout_ends_the_provider_session(post_stack: InteropStack) -> None:
    stack = post_stack

    async def silent_login(client: httpx2.AsyncClient) -> dict[str, list[str]]:
        start = await client.get(f"{stack.url}/auth/login", params={"prompt": "none"})
        return parse_qs(urlsplit(await stack.follow_provider(client, start)).query)

    async with stack.client() as client:
        await stack.login(client, "ivan")
        assert "code" in await silent_login(client)  # the provider session is alive

        out = await stack.logout(client)
        logout_url = out.json()["logout_url"]
        assert logout_url.startswith(stack.provider.endpoint("/session/end?"))
        query = parse_qs(urlsplit(logout_url).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["post_logout_redirect_uri"] == [f"{stack.url}/"]

        confirmed = await _confirm_provider_logout(stack, client, logout_url)
        assert confirmed.status_code == 303
        assert confirmed.headers["location"] == f"{stack.url}/"

        assert (await silent_login(client))["error"] == ["login_required"]
        assert (await stack.session(client)).status_code == 401


# (11)
async def test_backchannel_logout_ends_the_bff_session(post_stack: InteropStack) -> None:
    stack = post_stack
    events = len(stack.provider.events())
    async with stack.client() as client:
        await stack.login(client, "judy")
        assert (await stack.session(client)).status_code == 200
        # The user signs out at the provider (another tab, another app): the BFF hears of it server-side.
        confirmed = await _confirm_provider_logout(
            stack, client, stack.provider.endpoint(f"/session/end?client_id={CLIENT_ID}")
        )
        assert confirmed.status_code == 303
        delivered = [e for e in stack.provider.events()[events:] if e["event"].startswith("backchannel.")]
        assert delivered == [{"event": "backchannel.success"}], delivered
        assert (await stack.session(client)).status_code == 401
        assert (await stack.integrations(client)).status_code == 401


async def test_backchannel_logout_refuses_a_forged_logout_token(post_stack: InteropStack) -> None:
    stack = post_stack
    mark = len(stack.idp.exchanges)
    async with stack.client() as client:
        await stack.login(client, "mallory")
        claims = _jwt_part(stack.token_responses(mark)[0]["id_token"], 1)
        forged = {
            "iss": stack.provider.issuer,
            "aud": CLIENT_ID,
            "iat": int(time.time()),
            "jti": "forged-1",
            "sub": claims["sub"],
            "sid": claims["sid"],
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }
        # Well-formed and naming the provider's key id, but signed with another key.
        token = jwt.encode({"alg": "RS256", "kid": "interop-key-1"}, forged, signing_key("interop-key-1"))
        async with httpx2.AsyncClient(timeout=10) as c:
            refused = await c.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": token})
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"
        assert (await stack.session(client)).status_code == 200


async def test_session_user_claims_from_a_provider_that_keeps_them_out_of_the_id_token(
    make_interop_stack: Callable[..., InteropStack],
) -> None:
    # oidc-provider's default (conformIdTokenClaims): with an access token issued, scope-requested claims
    # (name, email, preferred_username) are served by the userinfo endpoint only, never in the ID token.
    stack = make_interop_stack(conform_id_token_claims=True)
    async with stack.client() as client:
        await stack.login(client, "alice")
        user = (await stack.session(client)).json()["user"]
    assert user["sub"] == ACCOUNTS["alice"].sub
    assert user.get("preferred_username") == "alice"
    assert user.get("email") == ACCOUNTS["alice"].email
