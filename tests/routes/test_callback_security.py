"""Each protection at the callback has a test that fails when the protection is removed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bff.sessions.cookie import SignedValueCodec
from tests.support.idp_tamper import publish_test_key, resign_id_token
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}


async def _assert_no_session(stack: Stack, client: Any) -> None:
    assert stack.settings.session_cookie_name not in client.cookies
    r = await client.get(f"{stack.url}/auth/session", headers=CSRF)
    assert r.status_code == 401


async def test_unknown_state_is_rejected(stack: Stack) -> None:
    async with stack.client() as client:
        _, params = await stack.authorize(client)
        r = await client.get(f"{stack.url}/auth/callback", params={**params, "state": "forged-state"})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_state"
        await _assert_no_session(stack, client)


async def test_replayed_callback_is_rejected(stack: Stack) -> None:
    async with stack.client() as client:
        callback, _ = await stack.authorize(client)
        assert (await client.get(callback)).status_code == 302
        again = await client.get(callback)
        assert again.status_code == 400
        assert again.json()["code"] == "invalid_state"


async def test_callback_in_another_browser_is_rejected(stack: Stack) -> None:
    async with stack.client() as victim:
        callback, _ = await stack.authorize(victim)
    async with stack.client() as other_browser:  # no browser-binding cookie
        r = await other_browser.get(callback)
        assert r.status_code == 400
        assert r.json()["code"] == "login_binding_mismatch"
        await _assert_no_session(stack, other_browser)


async def test_replayed_code_is_rejected(stack: Stack) -> None:
    async with stack.client() as client:
        callback, params = await stack.authorize(client)
        assert (await client.get(callback)).status_code == 302
        _, fresh = await stack.authorize(client)  # a valid state bound to this browser, with the old code
        r = await client.get(f"{stack.url}/auth/callback", params={**fresh, "code": params["code"]})
        assert r.status_code == 400
        assert r.json()["code"] == "login_failed"


async def test_issuer_mismatch_in_the_authorization_response(stack: Stack) -> None:
    async with stack.client() as client:
        _, params = await stack.authorize(client)
        r = await client.get(f"{stack.url}/auth/callback", params={**params, "iss": "https://evil.example/oidc"})
        assert r.status_code == 400 and r.json()["code"] == "issuer_mismatch"
        # The provider advertises the iss parameter, so leaving it out is refused too (RFC 9207 §2.4).
        _, params = await stack.authorize(client)
        params.pop("iss")
        r = await client.get(f"{stack.url}/auth/callback", params=params)
        assert r.status_code == 400 and r.json()["code"] == "issuer_mismatch"


def _set(**values: Any):  # type: ignore[no-untyped-def]
    return lambda claims: claims.update(values)


@pytest.mark.parametrize(
    ("change", "kid"),
    [
        pytest.param(_set(aud="someone-else"), "test-tamper-key", id="wrong-aud"),
        pytest.param(_set(iss="https://evil.example/oidc"), "test-tamper-key", id="wrong-iss"),
        pytest.param(_set(nonce="not-the-nonce"), "test-tamper-key", id="wrong-nonce"),
        pytest.param(lambda c: c.pop("nonce"), "test-tamper-key", id="missing-nonce"),
        pytest.param(_set(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "test-tamper-key", id="expired"),
        pytest.param(lambda c: None, "unknown-kid", id="unknown-key"),
    ],
)
async def test_bad_id_tokens_are_rejected(stack: Stack, change: Any, kid: str) -> None:
    if kid != "unknown-kid":
        stack.idp.rewriters.append(publish_test_key)
    stack.idp.rewriters.append(resign_id_token(change, kid=kid))
    async with stack.client() as client:
        callback, _ = await stack.authorize(client)
        r = await client.get(callback)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "invalid_id_token"
        await _assert_no_session(stack, client)
    # The tokens that came with the bad ID token were revoked, not kept.
    issued = stack.idp.token_responses()[-1]
    assert (await stack.introspect(issued["refresh_token"]))["active"] is False


async def test_untampered_test_key_is_accepted(stack: Stack) -> None:
    """Control for the test above: re-signing alone (valid claims) must still pass."""
    stack.idp.rewriters.append(publish_test_key)
    stack.idp.rewriters.append(resign_id_token(lambda c: None))
    async with stack.client() as client:
        callback, _ = await stack.authorize(client)
        assert (await client.get(callback)).status_code == 302


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/tab\tx",
        "javascript:alert(1)",
        "evil.example",
    ],
)
async def test_open_redirects_are_refused(stack: Stack, return_to: str) -> None:
    async with stack.client() as client:
        r = await client.get(f"{stack.url}/auth/login", params={"return_to": return_to})
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_return_to"


async def test_tampered_and_foreign_cookies_are_rejected(make_stack: MakeStack) -> None:
    old_key, new_key = "o" * 40, "n" * 40
    stack = make_stack(session_secrets=[new_key, old_key])
    name = stack.settings.session_cookie_name
    async with stack.client() as client:
        await stack.login(client)
        signed = client.cookies[name]
    session_id = SignedValueCodec([new_key], salt="bff.session").unsign(signed)
    assert session_id is not None

    async def status_with(value: str) -> int:
        async with stack.client() as c:
            r = await c.get(f"{stack.url}/auth/session", headers={**CSRF, "Cookie": f"{name}={value}"})
            return r.status_code

    assert await status_with(signed) == 200
    tampered = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
    assert await status_with(tampered) == 401
    assert await status_with(session_id) == 401  # the bare id, unsigned
    # Signed with an older key that is still listed: accepted (rotation).
    assert await status_with(SignedValueCodec([old_key], salt="bff.session").sign(session_id)) == 200
    # Signed with a key that is not (or no longer) listed: refused.
    assert await status_with(SignedValueCodec(["r" * 40], salt="bff.session").sign(session_id)) == 401


async def test_forged_unknown_kids_do_not_amplify_jwks_fetches(stack: Stack) -> None:
    stack.idp.rewriters.append(resign_id_token(lambda c: None, kid="forged-kid"))
    async with stack.client() as client:
        for _ in range(4):
            callback, _ = await stack.authorize(client)
            assert (await client.get(callback)).json()["code"] == "invalid_id_token"
    fetches = sum(req.url.path.endswith("/jwks") for req, _ in stack.idp.exchanges)
    assert fetches == 2  # the first load, then one refetch for the unknown kid, which is then remembered


async def test_login_hint_and_provider_error_codes_are_matched_whole(stack: Stack) -> None:
    async with stack.client() as client:
        r = await client.get(f"{stack.url}/auth/login", params={"login_hint": "admin\n"})
        assert r.status_code == 400
        assert r.json()["parameter"] == "login_hint"
        _, params = await stack.authorize(client)
        r = await client.get(
            f"{stack.url}/auth/callback", params={"state": params["state"], "iss": params["iss"], "error": "x\n"}
        )
        assert r.status_code == 302
        assert r.headers["location"] == "/?login_error=login_failed"
