"""Provider-facing behaviour that other providers differ on: discovery spelling, client auth, key rotation."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from tests.support.stack import Stack

CSRF = {"X-CSRF": "1"}


def _hide_standard_discovery(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
    if request.url.path.endswith("/.well-known/openid-configuration"):
        return httpx2.Response(404, request=request)
    return response


async def test_discovery_falls_back_to_the_underscore_spelling(make_stack: Any) -> None:
    # A provider that serves only the spelling the Kryptos docs use.
    stack = make_stack(idp_rewriters=(_hide_standard_discovery,))
    async with stack.client() as client:
        final = await stack.login(client)
        assert final.status_code == 302
    paths = [req.url.path for req, _ in stack.idp.exchanges]
    assert any(p.endswith("/openid-configuration") for p in paths)
    assert any(p.endswith("/openid_configuration") for p in paths)


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_token_endpoint_client_authentication(make_stack: Any, method: str) -> None:
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
