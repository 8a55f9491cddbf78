"""A Redis that stops answering: bounded waits, clean 503s, readiness that tells the truth in time.

``SIGSTOP`` of the test's own redis-server is the hardest kind of outage for a client: connections stay
open and accepted, nothing answers, no error ever comes. Every request must still end within its Redis
budget (``BFF_REDIS_TIMEOUT``, 2 s) instead of every call's socket timeout in turn, ``/readyz`` within a
second, and the service must recover by itself once Redis answers again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx2
import pytest

from tests.adversarial.conftest import PrivateRedis, cookie_headers
from tests.support.processes import Cluster, sign_in

BUDGET = 2.0


async def _timed(client: httpx2.AsyncClient, url: str, headers: dict[str, str]) -> tuple[float, httpx2.Response]:
    started = time.monotonic()
    response = await client.get(url, headers=headers)
    return time.monotonic() - started, response


@pytest.mark.slow
async def test_a_frozen_redis_costs_each_request_its_budget_and_no_more(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    # Cache off: every call needs Redis (with the cache on, the change feed's PONG deadline takes over).
    cluster = replicas(2, BFF_SESSION_CACHE_SECONDS="0", BFF_REDIS_TIMEOUT=str(BUDGET))
    limits = httpx2.Limits(max_connections=100)
    async with httpx2.AsyncClient(timeout=30) as browser, httpx2.AsyncClient(timeout=30, limits=limits) as api:
        cookie = await sign_in(browser, cluster.replicas[0])
        headers = cookie_headers(cookie)
        for replica in cluster.replicas:
            assert (await api.get(f"{replica.url}/api/v1/userinfo", headers=headers)).status_code == 200
        private_redis.freeze()
        try:
            calls = [_timed(api, f"{cluster.replicas[i % 2].url}/api/v1/userinfo", headers) for i in range(20)] + [
                _timed(api, f"{replica.url}/readyz", {}) for replica in cluster.replicas
            ]
            health = [_timed(api, f"{replica.url}/healthz", {}) for replica in cluster.replicas]
            results = await asyncio.gather(*calls, *health)
        finally:
            private_redis.thaw()
        api_results, ready_results, health_results = results[:20], results[20:22], results[22:]
        for elapsed, response in api_results:
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "session_store_unavailable"
            assert response.headers["content-type"].startswith("application/problem+json")
            assert elapsed < BUDGET + 1.5, elapsed  # without the shared budget: ~4 s (two calls, 2 s each)
        for elapsed, response in ready_results:
            assert response.status_code == 503
            assert elapsed < 1.5, elapsed  # its deadline is 0.8 s; without one it would take the 2 s budget
        for elapsed, response in health_results:
            assert response.status_code == 200 and elapsed < 1.0
        # Redis is back: both replicas serve the same session again by themselves, within a few seconds.
        deadline = time.monotonic() + 10
        statuses: list[int] = []
        while time.monotonic() < deadline:
            statuses = [
                (await api.get(f"{replica.url}/api/v1/userinfo", headers=headers)).status_code
                for replica in cluster.replicas
            ]
            if statuses == [200, 200]:
                break
            await asyncio.sleep(0.2)
        assert statuses == [200, 200]
    for replica in cluster.replicas:
        output = replica.output()
        assert "Traceback" not in output
        assert '"level": "error"' not in output
