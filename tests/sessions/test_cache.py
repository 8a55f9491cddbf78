"""The in-process session cache: correct across replicas, bypassed when its change feed is down."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2
import redis.asyncio as aioredis

from bff.sessions.cache import SessionCache
from bff.sessions.model import Session
from tests.support.clock import Clock
from tests.support.processes import sign_in, start_cluster

CSRF = {"X-CSRF": "1"}


def _session() -> Session:
    return Session("u", {}, "at", 2e9, "rt", None, "openid", 1.0, 1.0, 2e9, "lo")


def test_cache_serves_only_while_live_and_fresh() -> None:
    clock = Clock(start=100.0)
    cache = SessionCache(ttl=10, clock=clock)
    cache.put("k", _session(), epoch=cache.epoch)
    assert cache.get("k") is None  # not live yet: the change feed is not subscribed
    cache.clear(live=True)
    cache.put("k", _session(), epoch=cache.epoch)
    assert cache.get("k") == _session()
    clock.advance(10.1)
    assert cache.get("k") is None  # past its time-to-live
    cache.put("k", _session(), epoch=cache.epoch)
    cache.clear(live=False)  # the feed broke: nothing cached is trusted, nothing new is kept
    assert cache.get("k") is None
    cache.put("k", _session(), epoch=cache.epoch)
    assert cache.get("k") is None


def test_a_read_that_raced_with_a_change_is_not_cached() -> None:
    cache = SessionCache(ttl=10, clock=Clock(start=100.0))
    cache.clear(live=True)
    epoch = cache.epoch  # a read starts ...
    cache.drop("k")  # ... another process changes the session meanwhile ...
    cache.put("k", _session(), epoch=epoch)  # ... the (possibly stale) result is not kept
    assert cache.get("k") is None


def test_eviction_keeps_the_cache_bounded() -> None:
    cache = SessionCache(ttl=10, max_entries=10, clock=Clock(start=100.0))
    cache.clear(live=True)
    for i in range(25):
        cache.put(f"k{i}", _session(), epoch=cache.epoch)
    assert cache.get("k24") is not None
    assert cache.get("k0") is None


async def _session_status(client: httpx2.AsyncClient, url: str, cookie: str) -> int:
    r = await client.get(f"{url}/auth/session", headers={**CSRF, "Cookie": f"bff-session={cookie}"})
    return r.status_code


async def _until(predicate: Any, within: float = 2.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.005)
    return False


async def test_logout_on_one_replica_ends_the_cached_session_on_the_other(redis_url: str) -> None:
    cluster = start_cluster(redis_url, BFF_SESSION_CACHE_SECONDS="60")
    try:
        a, b = cluster.replicas
        async with httpx2.AsyncClient(timeout=10) as client:
            cookie = await sign_in(client, a)
            assert await _session_status(client, b.url, cookie) == 200  # now cached in B
            gets_before = await _redis_gets(redis_url)
            for _ in range(5):
                assert await _session_status(client, b.url, cookie) == 200
            assert await _redis_gets(redis_url) == gets_before  # served from B's cache, no Redis read
            out = await client.post(
                f"{a.url}/auth/logout",
                headers={**CSRF, "Cookie": f"bff-session={cookie}", "Origin": "http://127.0.0.1:1"},
            )
            assert out.status_code == 200
            # B hears of the logout through Redis and drops its copy (publish latency, not the 60 s TTL).
            assert await _until(lambda: _is_401(client, b.url, cookie), within=1.0)
    finally:
        cluster.stop()


async def _is_401(client: httpx2.AsyncClient, url: str, cookie: str) -> bool:
    return await _session_status(client, url, cookie) == 401


async def _redis_gets(redis_url: str) -> int:
    r = aioredis.from_url(redis_url)
    try:
        stats = await r.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))
    finally:
        await r.aclose()
