"""Rate limits (:mod:`bff.services.ratelimit`) and the store primitives they are built on (a GCRA bucket,
a sliding window), on both stores.

The Redis scripts time themselves with the server's ``TIME``, so these tests use real time with short
intervals (a few hundred milliseconds) rather than an injected clock.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from bff.config import Settings
from bff.errors import RateLimited
from bff.services.ratelimit import RateLimits
from bff.sessions.memory_store import MemoryStore
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore, pending_logins_key, provider_budget_key, rate_limit_key
from tests.support.clock import Clock
from tests.support.settings import minimal_settings


def _key() -> str:
    return f"bff:test:{{{secrets.token_hex(8)}}}:rl"


def _settings(**overrides: Any) -> Settings:
    base = {"public_url": "http://127.0.0.1:1", "issuer": "http://127.0.0.1:2/oidc", "idp_timeout": 10.0}
    return minimal_settings(**{**base, **overrides})


# --- the primitives ----------------------------------------------------------------------------------------


async def test_bucket_admits_a_burst_then_one_per_interval(store: KeyValueStore) -> None:
    key = _key()
    started = time.monotonic()
    assert [await store.rate_limit(key, interval=0.3, burst=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await store.rate_limit(key, interval=0.3, burst=3)
    # One drips in 0.3 s after the first: less what the four calls took (a loaded machine stretches them).
    assert 0.3 - (time.monotonic() - started) - 0.02 <= wait <= 0.3, wait
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
        usage = await r.memory_usage(key)
        assert usage is not None and usage < 120
    finally:
        await r.aclose()
        await store.aclose()


WINDOW = 1.2  # seconds


async def test_window_caps_members_and_says_when_room_comes(store: KeyValueStore) -> None:
    # Spaced so a loaded machine cannot slip a member out unnoticed: "d" must come within 0.4 s of "c".
    key = _key()
    before_a = time.monotonic()
    assert await store.window_add(key, "a", limit=2, window=WINDOW) == 0.0
    after_a = time.monotonic()
    await asyncio.sleep(0.4)
    assert await store.window_add(key, "b", limit=2, window=WINDOW) == 0.0
    asked = time.monotonic()
    wait = await store.window_add(key, "c", limit=2, window=WINDOW)
    answered = time.monotonic()
    # When "a" falls out: WINDOW s after it was added, as seen between the calls (a loaded machine stretches them).
    assert WINDOW - (answered - before_a) - 0.02 <= wait <= WINDOW - (asked - after_a) + 0.02, wait
    await asyncio.sleep(wait + 0.03)
    assert await store.window_add(key, "c", limit=2, window=WINDOW) == 0.0
    assert await store.window_add(key, "d", limit=2, window=WINDOW) > 0


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
    clock = Clock(start=0.0)
    store = MemoryStore(clock=clock)
    for i in range(3000):
        await store.rate_limit(f"b{i}", interval=1, burst=1)
        await store.window_add(f"w{i}", "m", limit=1, window=1)
        clock.advance(0.01)  # each entry is stale 1 s after it was made
    assert len(store._buckets) < 1200
    assert len(store._windows) < 1200


def test_keys_are_hash_tagged_and_name_no_client() -> None:
    key = rate_limit_key("login", "http://app.example 203.0.113.9")
    assert key.startswith("bff:rl:{") and key.endswith("}:login")
    assert "203.0.113" not in key
    assert pending_logins_key("ab" * 32).count("{") == 1
    assert provider_budget_key("https://idp client", "token").startswith("bff:idp:{")


# --- RateLimits ---------------------------------------------------------------------------


async def test_rate_limits_per_address_with_retry_after(store: KeyValueStore) -> None:
    limits = RateLimits(
        store, _settings(public_url=f"http://127.0.0.1:{secrets.randbelow(60000) + 1}"), clock=time.time
    )
    for _ in range(30):
        await limits.check("198.51.100.1", "login")
    with pytest.raises(RateLimited) as refused:
        await limits.check("198.51.100.1", "login")
    assert refused.value.status == 429 and refused.value.code == "rate_limited"
    assert refused.value.headers["Retry-After"] == "2"  # one start drips in every 2 s (30 a minute)
    await limits.check("198.51.100.2", "login")  # another address has its own bucket
    await limits.check("198.51.100.1", "callback")  # and another endpoint


async def test_a_zero_limit_is_off(store: KeyValueStore) -> None:
    limits = RateLimits(store, _settings(rate_limit_login=0), clock=time.time)
    for _ in range(100):
        await limits.check("198.51.100.1", "login")


async def test_pending_sign_ins_per_browser(store: KeyValueStore) -> None:
    limits = RateLimits(store, _settings(pending_logins_per_browser=3), clock=time.time)
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
