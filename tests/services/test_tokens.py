"""One refresh per expiry across replicas: two `bff serve` processes, one real Redis, a rotating provider.

The emulator revokes the whole grant when a rotated-out refresh token is presented again (as node
oidc-provider does), so a second redeem would show up as 401s and a dead grant, not just a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from bff.sessions.lock import RefreshLock
from bff.sessions.store import refresh_lock_key
from tests.support.processes import Cluster, cluster_sessions, expire_access_token, sign_in, start_cluster
from tests.support.stack import MakeStack

CSRF = {"X-CSRF": "1"}
ClusterFactory = Callable[..., Cluster]  # start_cluster with the shared Redis; keywords are BFF_* overrides


@pytest.fixture
def cluster_factory(redis_url: str) -> Iterator[ClusterFactory]:
    started: list[Cluster] = []

    def factory(**env: str) -> Cluster:
        cluster = start_cluster(redis_url, replicas=2, metrics=False, **env)
        started.append(cluster)
        return cluster

    yield factory
    for cluster in started:
        cluster.stop()


async def _burst(cluster: Cluster, cookie: str, n: int) -> list[httpx2.Response]:
    limits = httpx2.Limits(max_connections=n + 10)
    async with httpx2.AsyncClient(timeout=30, limits=limits) as client:
        calls = [
            client.get(
                f"{cluster.replicas[i % len(cluster.replicas)].url}/api/v1/integrations",
                headers={**CSRF, "Cookie": f"bff-session={cookie}"},
            )
            for i in range(n)
        ]
        return list(await asyncio.gather(*calls))


def _redeems(stats: dict[str, Any]) -> dict[str, int]:
    return dict(stats["token"].get("refresh_token", {}))


async def _grant_alive(cluster: Cluster, cookie: str) -> None:
    async with httpx2.AsyncClient(timeout=10) as client:
        for replica in cluster.replicas:
            r = await client.get(f"{replica.url}/api/v1/userinfo", headers={**CSRF, "Cookie": f"bff-session={cookie}"})
            assert r.status_code == 200, r.text
    stats = await cluster.control("GET", "stats")
    assert stats["refresh_token_reuse"] == 0


async def _expired_session(cluster: Cluster, *, token_delay: float) -> str:
    """Sign in on the first replica, jump past the access token's expiry, slow the provider down."""
    async with httpx2.AsyncClient() as browser:
        cookie = await sign_in(browser, cluster.replicas[0])
    await expire_access_token(cluster, cookie)
    await cluster.control("POST", "config", json={"token_delay_seconds": token_delay})
    return cookie


@pytest.mark.slow
async def test_fifty_concurrent_calls_over_two_replicas_cause_exactly_one_refresh(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory()
    # A realistic token-call latency, so both replicas are inside the refresh at the same time.
    cookie = await _expired_session(cluster, token_delay=0.3)
    responses = await _burst(cluster, cookie, 50)
    assert [r.status_code for r in responses] == [200] * 50, {r.status_code: r.text for r in responses}
    await cluster.control("POST", "config", json={"token_delay_seconds": 0})
    assert _redeems(await cluster.control("GET", "stats")) == {"success": 1}
    await _grant_alive(cluster, cookie)


@pytest.mark.slow
async def test_slow_provider_longer_than_the_lease_still_one_redeem(cluster_factory: ClusterFactory) -> None:
    # The lease (0.5 s) is renewed while the token call (2 s) is in flight, so no second redeem starts.
    cluster = cluster_factory(BFF_REFRESH_LOCK_LEASE="0.5", BFF_REFRESH_WAIT="10")
    cookie = await _expired_session(cluster, token_delay=2)
    responses = await _burst(cluster, cookie, 50)
    assert [r.status_code for r in responses] == [200] * 50
    await cluster.control("POST", "config", json={"token_delay_seconds": 0})
    assert _redeems(await cluster.control("GET", "stats")) == {"success": 1}
    await _grant_alive(cluster, cookie)


@pytest.mark.slow
async def test_waiters_give_up_with_503_and_retry_after(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(BFF_REFRESH_LOCK_LEASE="0.5", BFF_REFRESH_WAIT="0.5")
    cookie = await _expired_session(cluster, token_delay=2)
    responses = await _burst(cluster, cookie, 10)
    codes = sorted({r.status_code for r in responses})
    assert codes in ([200, 503], [503]), codes  # the lock holder's process may still succeed
    refused = [r for r in responses if r.status_code == 503]
    assert refused
    for r in refused:
        assert r.json()["code"] == "refresh_in_progress"
        assert int(r.headers["retry-after"]) >= 1
    # Every caller gave up after 0.5 s, the lock holder's own too; its refresh runs on to completion in the
    # background (the provider answers after 2 s) and is saved. Then the session is fine.
    for _ in range(60):
        if _redeems(await cluster.control("GET", "stats")).get("success"):
            break
        await asyncio.sleep(0.1)
    await cluster.control("POST", "config", json={"token_delay_seconds": 0})
    for _ in range(20):  # the save lands right after the provider's answer
        async with httpx2.AsyncClient(timeout=10) as client:
            probe = await client.get(
                f"{cluster.replicas[0].url}/api/v1/userinfo", headers={**CSRF, "Cookie": f"bff-session={cookie}"}
            )
        if probe.status_code == 200:
            break
        await asyncio.sleep(0.1)
    await _grant_alive(cluster, cookie)
    assert _redeems(await cluster.control("GET", "stats")) == {"success": 1}


@pytest.mark.slow
async def test_killed_lock_holder_never_leaves_a_hang_or_a_500(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(BFF_REFRESH_LOCK_LEASE="1", BFF_REFRESH_WAIT="10")
    holder, survivor = cluster.replicas
    async with httpx2.AsyncClient() as browser:
        cookie = await sign_in(browser, holder)
    session_id = await expire_access_token(cluster, cookie)
    await cluster.control("POST", "config", json={"token_delay_seconds": 3})
    manager, _, store = cluster_sessions(cluster)
    async with httpx2.AsyncClient(timeout=30) as client:
        doomed = asyncio.create_task(
            client.get(f"{holder.url}/api/v1/integrations", headers={**CSRF, "Cookie": f"bff-session={cookie}"})
        )
        lock = refresh_lock_key(session_id)
        for _ in range(200):  # the holder takes the lock within milliseconds
            if await store.get(lock) is not None:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the refresh lock was never taken")
        holder.stop(signal.SIGKILL)
        with pytest.raises(httpx2.HTTPError):
            await doomed
        started = time.monotonic()
        results = await asyncio.gather(
            *[
                client.get(f"{survivor.url}/api/v1/integrations", headers={**CSRF, "Cookie": f"bff-session={cookie}"})
                for _ in range(10)
            ]
        )
        elapsed = time.monotonic() - started
        lock_left = await store.get(lock)
    await store.aclose()
    await cluster.control("POST", "config", json={"token_delay_seconds": 0})
    # The survivor took over after the lease. Whether the killed holder's redeem had already reached the
    # provider decides between "still signed in" and a clean 401 — never a 5xx, never a hang.
    for r in results:
        assert r.status_code in (200, 401), r.text
        if r.status_code == 401:
            assert r.json()["code"] == "session_expired"
    assert len({r.status_code for r in results}) == 1
    assert elapsed < 10
    assert lock_left is None  # nobody renews a lock after its refresh ended
    del manager


async def test_a_renewal_that_swallows_its_cancellation_does_not_hold_up_the_refresh(
    make_stack: MakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen under load: a lock renewal in flight when the refresh ended ate the renewer's cancellation (inside
    the store client), so the renewer ran on, the refresh never returned and the lock was renewed for ever.
    The renewer now also stops at an event, and the refresh waits for it at most one lease."""

    async def renew_eating_the_cancel(self: RefreshLock) -> bool:
        with contextlib.suppress(asyncio.CancelledError):  # what a client library's cleanup may do with one
            await asyncio.sleep(30)
        return True

    monkeypatch.setattr(RefreshLock, "renew", renew_eating_the_cancel)
    stack = make_stack(emulator_options={"access_token_ttl": 2}, refresh_lock_lease=0.3, refresh_wait=5)
    async with stack.client() as client:
        await stack.login(client)
        await stack.emulator_control("POST", "config", json={"token_delay_seconds": 0.4})  # renewals happen
        await asyncio.sleep(1.1)  # past the refresh point of a 2 s token
        started = time.monotonic()
        r = await client.get(f"{stack.url}/api/v1/userinfo", headers=CSRF)
        elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text  # before the fix: 503 refresh_in_progress after refresh_wait (5 s)
    assert elapsed < 2.5, elapsed
    assert [b.get("refresh_token") is not None for b in stack.idp.token_responses()] == [True, True]
