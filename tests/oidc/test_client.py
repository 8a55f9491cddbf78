"""The OpenID Connect client (:mod:`bff.oidc.client`).

Against the emulator, the behaviour other providers differ on: discovery spelling, client auth, key
rotation. Against a provider on a MockTransport, the provider budget in front of every call.
"""

from __future__ import annotations

import time
from typing import Any

import httpx2
import pytest

from bff.config import Settings
from bff.errors import IdpBusy, TokenRejected
from bff.oidc.budget import ProviderBudget
from bff.oidc.client import OidcClient
from bff.sessions.memory_store import MemoryStore
from tests.support.settings import minimal_settings
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}


def _hide_standard_discovery(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    if request.url.path.endswith("/.well-known/openid-configuration"):
        return httpx2.Response(404, request=request)
    return response


async def test_discovery_falls_back_to_the_underscore_spelling(make_stack: MakeStack) -> None:
    # A provider that serves only the spelling the Kryptos docs use.
    stack = make_stack(idp_rewriters=(_hide_standard_discovery,))
    async with stack.client() as client:
        final = await stack.login(client)
        assert final.status_code == 302
    paths = [req.url.path for req, _ in stack.idp.exchanges]
    assert any(p.endswith("/openid-configuration") for p in paths)
    assert any(p.endswith("/openid_configuration") for p in paths)


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_token_endpoint_client_authentication(make_stack: MakeStack, method: str) -> None:
    # The emulator accepts only the configured method, so the other one would fail the login.
    stack = make_stack(token_auth_method=method, client_auth_methods=(method,))
    async with stack.client() as client:
        final = await stack.login(client)
        assert final.status_code == 302
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
    token_requests = [req for req, _ in stack.idp.exchanges if req.url.path.endswith("/token")]
    assert token_requests
    for req in token_requests:
        has_basic = req.headers.get("authorization", "").startswith("Basic ")
        assert has_basic is (method == "client_secret_basic")
        assert (b"client_secret=" in req.content) is (method == "client_secret_post")


async def test_signing_key_rotation_refetches_jwks_once(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        jwks_fetches = sum(req.url.path.endswith("/jwks") for req, _ in stack.idp.exchanges)
        await stack.emulator_control("POST", "rotate-keys", json={"drop_old": True})
        await stack.login(client, "linked")  # signed with a kid the BFF has not seen
        me = await client.get(f"{stack.url}/auth/session", headers=CSRF)
        assert me.json()["user"]["preferred_username"] == "linked"
    assert sum(req.url.path.endswith("/jwks") for req, _ in stack.idp.exchanges) == jwks_fetches + 1


async def test_session_endpoint_makes_no_upstream_call(stack: Stack) -> None:
    async with stack.client() as client:
        await stack.login(client)
        before = await stack.emulator_control("GET", "stats")
        exchanges = len(stack.idp.exchanges)
        for _ in range(5):
            assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
        after = await stack.emulator_control("GET", "stats")
    assert after == before
    assert len(stack.idp.exchanges) == exchanges


# --- the budget inside OidcClient: every caller is covered -------------------------------------------------


def _settings(**overrides: Any) -> Settings:
    base = {"public_url": "http://127.0.0.1:1", "issuer": "http://127.0.0.1:2/oidc", "idp_timeout": 10.0}
    return minimal_settings(**{**base, **overrides})


class _Provider:
    """A provider on a MockTransport: discovery, a token endpoint answering ``token_status``, userinfo."""

    issuer = "http://127.0.0.1:2/oidc"

    def __init__(self, token_status: int = 400, headers: dict[str, str] | None = None) -> None:
        self.calls: list[str] = []
        self.token_status = token_status
        self.headers = headers or {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        path = request.url.path.removeprefix("/oidc")
        self.calls.append(path)
        if path == "/.well-known/openid-configuration":
            endpoints = {name: f"{self.issuer}/{name}" for name in ("auth", "token", "jwks", "me", "revoke")}
            return httpx2.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": endpoints["auth"],
                    "token_endpoint": endpoints["token"],
                    "jwks_uri": endpoints["jwks"],
                    "userinfo_endpoint": endpoints["me"],
                    "revocation_endpoint": endpoints["revoke"],
                    "id_token_signing_alg_values_supported": ["none", "HS256", "RS256"],
                },
            )
        if path == "/token":
            return httpx2.Response(self.token_status, headers=self.headers, json={"error": "invalid_grant"})
        if path == "/me":
            return httpx2.Response(200, json={"sub": "u", "name": "Ada"})
        return httpx2.Response(200, json={})


def _oidc(provider: _Provider, budget: ProviderBudget | None) -> OidcClient:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(provider))
    return OidcClient(_settings(issuer=provider.issuer), http, clock=time.time, budget=budget)


async def test_oidc_client_spends_the_budget_before_every_call() -> None:
    provider = _Provider()
    store = MemoryStore()
    budget = ProviderBudget(
        store, provider="p", token_per_minute=4, userinfo_per_hour=1, exchange_share=0.5, clock=time.time
    )
    oidc = _oidc(provider, budget)
    assert (await oidc.metadata()).id_token_algs == ("RS256",)
    for _ in range(2):
        with pytest.raises(TokenRejected):
            await oidc.exchange_code("garbage", "v" * 43, "http://127.0.0.1:1/auth/callback")
    with pytest.raises(IdpBusy):
        await oidc.exchange_code("garbage", "v" * 43, "http://127.0.0.1:1/auth/callback")
    for _ in range(2):
        with pytest.raises(TokenRejected):
            await oidc.refresh("rt")
    with pytest.raises(IdpBusy):
        await oidc.refresh("rt")
    assert provider.calls.count("/token") == 4
    assert await oidc.userinfo("at") == {"sub": "u", "name": "Ada"}
    assert await oidc.userinfo("at") == {}  # spent: not called, and the sign-in goes on without the claims
    assert provider.calls.count("/me") == 1
    for _ in range(3):
        await oidc.revoke("rt", "refresh_token")  # logout is not counted: it needs a signed-in session
    assert provider.calls.count("/revoke") == 3


@pytest.mark.parametrize("with_budget", [True, False], ids=["shared", "no-budget"])
async def test_provider_429_is_idp_busy_with_its_retry_after(with_budget: bool) -> None:
    provider = _Provider(429, {"Retry-After": "7"})
    store = MemoryStore()
    budget = ProviderBudget(
        store, provider="p", token_per_minute=100, userinfo_per_hour=10, exchange_share=0.7, clock=time.time
    )
    oidc = _oidc(provider, budget if with_budget else None)
    with pytest.raises(IdpBusy) as busy:
        await oidc.refresh("rt")
    assert busy.value.code == "idp_busy" and busy.value.headers["Retry-After"] == "7"
    with pytest.raises(IdpBusy) as again:
        await oidc.exchange_code("c", "v" * 43, "http://127.0.0.1:1/auth/callback")
    assert again.value.headers["Retry-After"] in ("6", "7")
    assert provider.calls.count("/token") == (1 if with_budget else 2)  # with the budget, no second call
