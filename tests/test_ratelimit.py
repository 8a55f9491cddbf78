"""The abuse-limit primitives (GCRA bucket, sliding window) on both stores, and what bff.services.ratelimit builds on them.

The Redis scripts time themselves with the server's ``TIME``, so these tests use real time with short
intervals (a few hundred milliseconds) rather than an injected clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis
from starlette.requests import Request

from bff.config import Settings
from bff.errors import IdpBusy, RateLimited, TokenRejected
from bff.oidc.budget import ProviderBudget, parse_retry_after
from bff.oidc.client import OidcClient
from bff.oidc.jose import signing_algs
from bff.services.ratelimit import RateLimits
from bff.sessions.memory_store import MemoryStore
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore, pending_logins_key, provider_budget_key, rate_limit_key
from bff.web.request import client_address
from tests.support.settings import minimal_settings


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[KeyValueStore]:
    s: KeyValueStore = MemoryStore() if request.param == "memory" else RedisStore.from_url(redis_url)
    yield s
    await s.aclose()


def _key() -> str:
    return f"bff:test:{{{secrets.token_hex(8)}}}:rl"


def _settings(**overrides: Any) -> Settings:
    base = {"public_url": "http://127.0.0.1:1", "issuer": "http://127.0.0.1:2/oidc", "idp_timeout": 10.0}
    return minimal_settings(**{**base, **overrides})


def _request(host: str | None) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": (host, 1) if host else None})


# --- the primitives ----------------------------------------------------------------------------------------


async def test_bucket_admits_a_burst_then_one_per_interval(store: KeyValueStore) -> None:
    key = _key()
    assert [await store.rate_limit(key, interval=0.3, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await store.rate_limit(key, interval=0.3, burst=3)
    assert 0.2 < wait <= 0.3
    assert 0 < await store.rate_limit(key, interval=0.3, burst=3) <= 0.3  # refused again: nothing was counted
    await asyncio.sleep(wait + 0.02)
    assert await store.rate_limit(key, interval=0.3, burst=3) == 0.0  # one more has dripped in ...
    assert await store.rate_limit(key, interval=0.3, burst=3) > 0  # ... and only one


async def test_buckets_are_independent(store: KeyValueStore) -> None:
    a, b = _key(), _key()
    assert await store.rate_limit(a, interval=10, burst=1) == 0.0
    assert await store.rate_limit(a, interval=10, burst=1) > 9
    assert await store.rate_limit(b, interval=10, burst=1) == 0.0


async def test_redis_bucket_is_one_small_key_that_expires_when_full_again(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    r = aioredis.from_url(redis_url)
    key = _key()
    try:
        for _ in range(5):
            await store.rate_limit(key, interval=2.0, burst=5)
        ttl = await r.pttl(key)
        assert 9_000 < ttl <= 10_000  # five requests spent: full again in 5 * 2 s
        before = await r.get(key)
        assert await store.rate_limit(key, interval=2.0, burst=5) > 1.9
        assert await r.get(key) == before  # a refused request writes nothing
        assert await r.memory_usage(key) < 120
    finally:
        await r.aclose()
        await store.aclose()


async def test_window_caps_members_and_says_when_room_comes(store: KeyValueStore) -> None:
    key = _key()
    assert await store.window_add(key, "a", limit=2, window=0.4) == 0.0
    await asyncio.sleep(0.1)
    assert await store.window_add(key, "b", limit=2, window=0.4) == 0.0
    wait = await store.window_add(key, "c", limit=2, window=0.4)
    assert 0.2 < wait <= 0.31  # when "a" falls out
    await asyncio.sleep(wait + 0.03)
    assert await store.window_add(key, "c", limit=2, window=0.4) == 0.0
    assert await store.window_add(key, "d", limit=2, window=0.4) > 0


async def test_window_shared_by_callers_with_different_limits(store: KeyValueStore) -> None:
    # The provider budget: exchanges may fill 7 of 10, refreshes all 10.
    key = _key()
    admitted = [await store.window_add(key, f"x{i}", limit=7, window=60) == 0.0 for i in range(9)]
    assert admitted == [True] * 7 + [False] * 2
    assert [await store.window_add(key, f"r{i}", limit=10, window=60) == 0.0 for i in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    wait = await store.window_add(key, "x9", limit=7, window=60)
    assert 59 < wait <= 60  # exchanges wait until 4 members fall out (all were added just now: ~60 s)


async def test_window_remove_makes_room(store: KeyValueStore) -> None:
    key = _key()
    assert await store.window_add(key, "a", limit=1, window=60) == 0.0
    assert await store.window_add(key, "b", limit=1, window=60) > 0
    await store.window_remove(key, "a")
    await store.window_remove(key, "never-added")
    assert await store.window_add(key, "b", limit=1, window=60) == 0.0


async def test_memory_store_sweeps_what_no_longer_matters() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    for i in range(3000):
        await store.rate_limit(f"b{i}", interval=1, burst=1)
        await store.window_add(f"w{i}", "m", limit=1, window=1)
        now[0] += 0.01  # each entry is stale 1 s after it was made
    assert len(store._buckets) < 1200
    assert len(store._windows) < 1200


def test_keys_are_hash_tagged_and_name_no_client() -> None:
    key = rate_limit_key("login", "http://app.example 203.0.113.9")
    assert key.startswith("bff:rl:{") and key.endswith("}:login")
    assert "203.0.113" not in key
    assert pending_logins_key("ab" * 32).count("{") == 1
    assert provider_budget_key("https://idp client", "token").startswith("bff:idp:{")


# --- client addresses, Retry-After ------------------------------------------------------------------------


def test_client_address_counts_ipv6_per_64() -> None:
    assert client_address(_request("203.0.113.9")) == "203.0.113.9"
    assert client_address(_request("2001:db8:1:2:aaaa::1")) == client_address(_request("2001:db8:1:2:bbbb::2"))
    assert client_address(_request("2001:db8:1:2::1")) != client_address(_request("2001:db8:1:3::1"))
    assert client_address(_request("::ffff:203.0.113.9")) == "203.0.113.9"
    assert client_address(_request(None)) == "unknown"


def test_retry_after_parsing_is_bounded() -> None:
    now = time.time()
    assert parse_retry_after("2", now=now) == 2
    assert parse_retry_after("0", now=now) == 1
    assert parse_retry_after("999999", now=now) == 3600
    assert parse_retry_after(None, now=now) == 60
    assert parse_retry_after("soon", now=now) == 60
    assert 25 <= parse_retry_after(formatdate(now + 30, usegmt=True), now=now) <= 31


# --- RateLimits and ProviderBudget ---------------------------------------------------------------------------


async def test_rate_limits_per_address_with_retry_after(store: KeyValueStore) -> None:
    limits = RateLimits(store, _settings(public_url=f"http://127.0.0.1:{secrets.randbelow(60000) + 1}"))
    for _ in range(30):
        await limits.check("198.51.100.1", "login")
    with pytest.raises(RateLimited) as refused:
        await limits.check("198.51.100.1", "login")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "2"  # one start drips in every 2 s (30 a minute)
    await limits.check("198.51.100.2", "login")  # another address has its own bucket
    await limits.check("198.51.100.1", "callback")  # and another endpoint


async def test_a_zero_limit_is_off(store: KeyValueStore) -> None:
    limits = RateLimits(store, _settings(rate_limit_login=0))
    for _ in range(100):
        await limits.check("198.51.100.1", "login")


async def test_pending_sign_ins_per_browser(store: KeyValueStore) -> None:
    limits = RateLimits(store, _settings(pending_logins_per_browser=3))
    binding = secrets.token_hex(32)
    await limits.start_login(binding, "s0", new_binding=True)  # nothing written for a new binding ...
    await limits.start_login(binding, "s1", new_binding=False)
    await limits.start_login(binding, "s2", new_binding=False)
    with pytest.raises(RateLimited) as refused:  # ... but it still counts: 3 pending
        await limits.start_login(binding, "s3", new_binding=False)
    assert 299 <= int(refused.value.headers["Retry-After"]) <= 300
    await limits.finish_login(binding, "s1")
    await limits.start_login(binding, "s3", new_binding=False)
    await limits.start_login(secrets.token_hex(32), "s4", new_binding=False)  # another browser


async def test_provider_budget_keeps_room_for_refreshes(store: KeyValueStore) -> None:
    budget = ProviderBudget(
        store,
        provider=secrets.token_hex(8),
        token_per_minute=10,
        userinfo_per_hour=2,
        exchange_share=0.7,
        clock=time.time,
    )
    for _ in range(7):
        await budget.spend("authorization_code")
    with pytest.raises(IdpBusy) as busy:
        await budget.spend("authorization_code")
    assert busy.value.status == 503 and busy.value.code == "idp_busy"
    assert 59 <= int(busy.value.headers["Retry-After"]) <= 60
    for _ in range(3):
        await budget.spend("refresh_token")
    with pytest.raises(IdpBusy):
        await budget.spend("refresh_token")
    await budget.spend("userinfo")
    await budget.spend("userinfo")
    with pytest.raises(IdpBusy):
        await budget.spend("userinfo")


async def test_provider_429_makes_everyone_wait(store: KeyValueStore) -> None:
    provider = secrets.token_hex(8)
    one = ProviderBudget(
        store, provider=provider, token_per_minute=100, userinfo_per_hour=10, exchange_share=0.7, clock=time.time
    )
    other = ProviderBudget(
        store, provider=provider, token_per_minute=100, userinfo_per_hour=10, exchange_share=0.7, clock=time.time
    )
    busy = await one.provider_said_wait("refresh_token", "1")
    assert busy.headers["Retry-After"] == "1"
    for call in ("authorization_code", "refresh_token"):
        with pytest.raises(IdpBusy) as refused:
            await other.spend(call)  # type: ignore[arg-type]
        assert refused.value.headers["Retry-After"] == "1"
    await other.spend("userinfo")  # another endpoint, another quota
    await asyncio.sleep(1.05)
    await other.spend("refresh_token")


async def test_a_zero_budget_is_off(store: KeyValueStore) -> None:
    budget = ProviderBudget(
        store,
        provider=secrets.token_hex(8),
        token_per_minute=0,
        userinfo_per_hour=0,
        exchange_share=0.7,
        clock=time.time,
    )
    for _ in range(200):
        await budget.spend("authorization_code")
        await budget.spend("userinfo")


# --- signing algorithms --------------------------------------------------------------------------------------


def test_only_asymmetric_signing_algorithms_are_accepted() -> None:
    assert signing_algs(["none", "RS256", "HS256", "ES256"]) == ("RS256", "ES256")
    assert signing_algs(["HS256", "HS512"]) == ("RS256",)  # nothing left: RS256, which every provider supports
    assert signing_algs(["none"]) == ("RS256",)
    assert signing_algs(None) == ("RS256",)
    assert signing_algs("RS256 none") == ("RS256",)
    assert signing_algs(["PS256", "EdDSA", "RS512"]) == ("PS256", "EdDSA", "RS512")


# --- the budget inside OidcClient: every caller is covered -------------------------------------------------


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
