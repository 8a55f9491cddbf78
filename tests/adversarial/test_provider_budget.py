"""The provider's quota: anonymous callbacks cannot spend it for everyone, and a 429 from it stops every replica.

Kryptos allows 100 token-endpoint calls a minute per client id. A valid ``state`` (anyone can start a
sign-in) plus a garbage ``code`` makes bff call the token endpoint with the client secret; without a budget,
enough of them lock every signed-in user out of refreshing. Here the budget is 10 a minute (so code
exchanges may make 7) and the calls are counted by the emulator itself (``/_emulator/stats``).
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from tests.adversarial.conftest import PrivateRedis, cookie_headers
from tests.support.processes import Cluster, Replica, sign_in

ACCESS_TOKEN_TTL = 2  # seconds: a session's access token is due for refresh after 1 s


def _token_calls(stats: dict[str, Any], grant_type: str) -> dict[str, int]:
    return dict(stats["token"].get(grant_type, {}))


def _assert_idp_busy(response: httpx2.Response, *, at_most: int = 60) -> int:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "idp_busy"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= at_most, retry_after
    return int(retry_after)


async def _garbage_callback(client: httpx2.AsyncClient, replica: Replica, issuer: str) -> tuple[str, dict[str, str]]:
    """Start a sign-in as a new browser (a real state and its binding cookie); the callback with a made-up code."""
    start = await client.get(f"{replica.url}/auth/login")
    assert start.status_code == 302, start.text
    state = dict(p.split("=", 1) for p in urlsplit(start.headers["location"]).query.split("&"))["state"]
    url = f"{replica.url}/auth/callback?state={state}&code=garbage-{state[:8]}&iss={issuer}"
    return url, {"Cookie": f"bff-login={start.cookies['bff-login']}"}


@pytest.mark.slow
async def test_garbage_callbacks_spend_at_most_the_exchange_share(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    cluster = replicas(2, BFF_TOKEN_BUDGET_PER_MINUTE="10")
    a, b = cluster.replicas
    await cluster.control("POST", "config", json={"access_token_ttl": ACCESS_TOKEN_TTL})
    async with httpx2.AsyncClient(timeout=15) as person:
        cookie = await sign_in(person, a)  # one code exchange of the 7 allowed
        signed_in = time.monotonic()
    no_jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    async with httpx2.AsyncClient(timeout=15, cookies=no_jar) as attacker:
        pairs = [await _garbage_callback(attacker, (a, b)[i % 2], cluster.emulator_config.issuer) for i in range(20)]
        # All at once, over both replicas.
        answers = await asyncio.gather(*(attacker.get(url, headers=headers) for url, headers in pairs))
    codes = sorted(r.json()["code"] for r in answers)
    assert codes == ["idp_busy"] * 14 + ["login_failed"] * 6, codes
    for busy in (r for r in answers if r.status_code == 503):
        _assert_idp_busy(busy)
    stats = await cluster.control("GET", "stats")
    assert _token_calls(stats, "authorization_code") == {"success": 1, "invalid_grant": 6}  # 7 of 10, no more
    # The 3 calls left are the refreshes': the signed-in person keeps working on both replicas.
    await asyncio.sleep(max(0.0, signed_in + ACCESS_TOKEN_TTL / 2 + 0.2 - time.monotonic()))
    async with httpx2.AsyncClient(timeout=15) as person:
        for replica in (b, a):
            r = await person.get(f"{replica.url}/api/v1/userinfo", headers=cookie_headers(cookie))
            assert r.status_code == 200, r.text
    stats = await cluster.control("GET", "stats")
    assert _token_calls(stats, "refresh_token") == {"success": 1}
    assert sum(_token_calls(stats, "authorization_code").values()) == 7


@pytest.mark.slow
async def test_provider_429_makes_every_replica_back_off(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    cluster = replicas(2)
    a, b = cluster.replicas
    await cluster.control("POST", "config", json={"access_token_ttl": ACCESS_TOKEN_TTL})
    async with httpx2.AsyncClient(timeout=15) as person, httpx2.AsyncClient(timeout=15) as other:
        cookie = await sign_in(person, a)
        # Someone else is half-way through signing in when the provider starts refusing.
        start = await other.get(f"{b.url}/auth/login", params={"login_hint": "linked"})
        approve = await other.get(start.headers["location"])
        pending_callback = f"{b.url}/auth/callback?{urlsplit(approve.headers['location']).query}"
        await cluster.control("POST", "config", json={"token_failure": "rate_limited"})  # 429, Retry-After: 2
        await asyncio.sleep(ACCESS_TOKEN_TTL / 2 + 0.1)
        refused_at = time.monotonic()
        first = await person.get(f"{a.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        assert _assert_idp_busy(first) == 2  # the provider's Retry-After, passed on
        calls = await cluster.control("GET", "stats")
        assert _token_calls(calls, "refresh_token") == {"rate_limited": 1}
        # Until then no replica calls the token endpoint: neither for a refresh nor for a code exchange.
        _assert_idp_busy(await person.get(f"{b.url}/api/v1/userinfo", headers=cookie_headers(cookie)), at_most=2)
        _assert_idp_busy(await person.get(f"{a.url}/api/v1/integrations", headers=cookie_headers(cookie)), at_most=2)
        _assert_idp_busy(await other.get(pending_callback), at_most=2)
        assert time.monotonic() - refused_at < 2
        assert (await cluster.control("GET", "stats"))["token"] == calls["token"]
        # The provider recovers; once the wait is over, the session refreshes as usual (it was never ended).
        await cluster.control("POST", "config", json={"token_failure": None})
        await asyncio.sleep(max(0.0, refused_at + 2.2 - time.monotonic()))
        # On a loaded machine the replica's own reading of the wait can end a little later than ours: ask
        # until it answers (still busy meanwhile, and still without calling the provider: the stats below).
        while (
            after := await person.get(f"{b.url}/api/v1/userinfo", headers=cookie_headers(cookie))
        ).status_code != 200:
            _assert_idp_busy(after, at_most=2)
            assert time.monotonic() - refused_at < 6, after.text
            await asyncio.sleep(0.2)
    stats = await cluster.control("GET", "stats")
    assert _token_calls(stats, "refresh_token") == {"rate_limited": 1, "success": 1}
