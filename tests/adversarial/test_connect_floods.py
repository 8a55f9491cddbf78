"""Floods on the Connect endpoints, against ``bff serve`` replicas on a private Redis: one address gets its
burst; many addresses together cost Kryptos no more than the deployment's budget; neither leaves a session
or a grant behind, and a refused request calls nobody."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx2

from tests.adversarial.conftest import CSRF, PrivateRedis
from tests.support.processes import Cluster

PER_ADDRESS = 5
BUDGET = 20


async def link(client: httpx2.AsyncClient, replica_url: str, address: str) -> httpx2.Response:
    """A link-token request from ``address``, as the trusted proxy (loopback) forwards it."""
    return await client.post(f"{replica_url}/connect/link-token", headers={**CSRF, "X-Forwarded-For": address})


async def _link_token_calls(cluster: Cluster) -> int:
    log = await cluster.control("GET", "requests?limit=1000")
    return sum(1 for entry in log["requests"] if entry["path"] == "/connect/link-token")


async def test_connect_floods_are_bounded_per_address_and_for_the_deployment(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster]
) -> None:
    cluster = replicas(
        2,
        BFF_TRUSTED_PROXIES="127.0.0.1/32",
        BFF_RATE_LIMIT_CONNECT=str(PER_ADDRESS),
        BFF_CONNECT_BUDGET_PER_MINUTE=str(BUDGET),
    )
    a, b = cluster.replicas
    keys_before, _ = private_redis.keys_and_bytes()
    async with httpx2.AsyncClient(timeout=15) as proxy:
        # One address, 12 requests over both replicas: its burst, then 429 before any call to Kryptos.
        one = await asyncio.gather(*(link(proxy, (a, b)[i % 2].url, "203.0.113.1") for i in range(12)))
        assert Counter(r.status_code for r in one) == {200: PER_ADDRESS, 429: 12 - PER_ADDRESS}
        # Thirty more addresses, two requests each (all within their own limits): the deployment's budget
        # holds for all of them together.
        many = await asyncio.gather(*(link(proxy, (a, b)[i % 2].url, f"198.51.100.{i % 30}") for i in range(60)))
    statuses = Counter(r.status_code for r in many)
    assert set(statuses) == {200, 503}
    assert statuses[200] <= BUDGET - PER_ADDRESS + 1  # GCRA may let one more through as time passes
    for refused in (r for r in many if r.status_code == 503):
        assert refused.json()["code"] == "connect_busy" and int(refused.headers["retry-after"]) >= 1
    # Kryptos saw exactly the admitted requests, and nothing was stored but the buckets.
    assert await _link_token_calls(cluster) == PER_ADDRESS + statuses[200]
    with private_redis.client() as r:
        keys = list(r.scan_iter(count=1000))
    assert len(keys) - keys_before == 1 + 30 + 1  # a bucket per address (31), one for the deployment
    assert Counter(k.rsplit(b":", 1)[1] for k in keys if k.startswith(b"bff:rl:")) == {
        b"connect": 31,
        b"connect_budget": 1,
    }
    assert not any(b":session" in k or k.startswith(b"bff:cg") for k in keys)  # no session, no grant
