"""Each protection at the callback has a test that fails when the protection is removed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bff.sessions.cookie import SignedValueCodec
from tests.support.idp_tamper import publish_test_key, resign_id_token
from tests.support.stack import MakeStack, Stack

CSRF = {"X-CSRF": "1"}


async def _assert_no_session(stack: Stack, client: Any, case: str = "") -> None:
    assert stack.settings.session_cookie_name not in client.cookies, case
    r = await client.get(f"{stack.url}/auth/session", headers=CSRF)
    assert r.status_code == 401, (case, r.text)


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


# (case, change to the ID token's claims, kid it is re-signed under). The unknown key comes last: its
# refetch of the JWKS (without the test key) is then the only one that does not publish the test key.
BAD_ID_TOKENS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("wrong-aud", _set(aud="someone-else"), "test-tamper-key"),
    ("wrong-iss", _set(iss="https://evil.example/oidc"), "test-tamper-key"),
    ("wrong-nonce", _set(nonce="not-the-nonce"), "test-tamper-key"),
    ("missing-nonce", lambda c: c.pop("nonce"), "test-tamper-key"),
    ("expired", _set(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200), "test-tamper-key"),
    ("unknown-key", lambda c: None, "unknown-kid"),
]


async def test_bad_id_tokens_are_rejected(stack: Stack) -> None:
    """One stack for every case; each case has its own rewriters (removed after it) and a fresh browser."""
    for case, change, kid in BAD_ID_TOKENS:
        rewriters = list(stack.idp.rewriters)
        if kid != "unknown-kid":
            stack.idp.rewriters.append(publish_test_key)
        stack.idp.rewriters.append(resign_id_token(change, kid=kid))
        seen = len(stack.idp.token_responses())
        try:
            async with stack.client() as client:
                callback, _ = await stack.authorize(client)
                r = await client.get(callback)
                assert r.status_code == 400, (case, r.text)
                assert r.json()["code"] == "invalid_id_token", (case, r.text)
                await _assert_no_session(stack, client, case)
        finally:
            stack.idp.rewriters[:] = rewriters
        # The tokens that came with the bad ID token were revoked, not kept.
        responses = stack.idp.token_responses()
        assert len(responses) > seen, case
        issued = responses[-1]
        assert (await stack.introspect(issued["refresh_token"]))["active"] is False, case


async def test_untampered_test_key_is_accepted(stack: Stack) -> None:
    """Control for the test above: re-signing alone (valid claims) must still pass."""
    stack.idp.rewriters.append(publish_test_key)
    stack.idp.rewriters.append(resign_id_token(lambda c: None))
    async with stack.client() as client:
        callback, _ = await stack.authorize(client)
        assert (await client.get(callback)).status_code == 302


OPEN_REDIRECTS = [
    "//evil.example",
    "https://evil.example",
    "/\\evil.example",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/ok\r\nSet-Cookie: x=1",
    "/tab\tx",
    "javascript:alert(1)",
    "evil.example",
]


async def test_open_redirects_are_refused(stack: Stack) -> None:
    for return_to in OPEN_REDIRECTS:
        async with stack.client() as client:
            r = await client.get(f"{stack.url}/auth/login", params={"return_to": return_to})
            assert r.status_code == 400, (return_to, r.text)
            assert r.json()["code"] == "invalid_return_to", (return_to, r.text)


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
