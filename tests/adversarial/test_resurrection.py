"""A session that ended stays ended: no replica, stale copy or dead change feed brings it back.

Two ``bff serve`` replicas on one real Redis. Replica B's view of Redis is made stale the two ways it
happens in production: its change feed is cut (``CLIENT KILL TYPE pubsub``), or it dies silently (a relay
stops forwarding its subscription's bytes without closing anything). Each test fails without the protection
it names: conditional writes plus tombstones (a sliding write from a stale copy cannot resurrect a session),
the feed's PING/PONG deadline (a silent feed stops being trusted within seconds), the reconnect check (a
feed that redis-py quietly re-established counts as a gap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest
import redis

from bff.sessions.manager import TOMBSTONE, TOMBSTONE_TTL
from bff.sessions.redis_store import FEED_DEADLINE
from bff.sessions.store import SESSION_EVENTS_CHANNEL, session_key
from tests.adversarial.conftest import Peek, PrivateRedis, cookie_headers
from tests.support.processes import Cluster, Replica, sign_in
from tests.support.tcp_relay import TcpRelay


@pytest.fixture
def relay(private_redis: PrivateRedis) -> Iterator[TcpRelay]:
    relay = TcpRelay(private_redis.server.port)
    yield relay
    relay.close()


async def _session_status(client: httpx2.AsyncClient, replica: Replica, cookie: str) -> int:
    return (await client.get(f"{replica.url}/auth/session", headers=cookie_headers(cookie))).status_code


async def _wait_subscribed(relay: TcpRelay) -> None:
    # B subscribes right after start-up; its subscription must be on the relay before it can be silenced.
    for _ in range(100):
        if any(link.subscriber for link in relay._links):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the replica never subscribed to the change feed")


def _stored(private_redis: PrivateRedis, session_id: str) -> bytes | None:
    with private_redis.client() as r:
        value: bytes | None = r.get(session_key(session_id))
        return value


async def _a_and_b(replicas: Callable[..., Cluster], relay: TcpRelay, **env: str) -> Cluster:
    """Replica A talks to Redis directly; replica B (``cluster.replicas[1]``) through the relay."""
    cluster = replicas(1, **env)
    cluster.start_replica(BFF_REDIS_URL=relay.redis_url)
    await _wait_subscribed(relay)
    return cluster


@pytest.mark.slow
async def test_a_silent_feed_stops_being_trusted_within_seconds(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster], relay: TcpRelay, peek: Callable[[Cluster], Peek]
) -> None:
    # A long cache (30 s) and no sliding write due for 30 s: only the feed's PONG deadline can end B's trust.
    cluster = await _a_and_b(replicas, relay, BFF_SESSION_CACHE_SECONDS="30", BFF_SESSION_IDLE_TIMEOUT="300")
    a, b = cluster.replicas
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as api:
        cookie = await sign_in(browser, a)
        assert await _session_status(api, b, cookie) == 200  # B now holds the session in its cache
        assert relay.silence_subscribers() == 1
        out = await api.post(f"{a.url}/auth/logout", headers=cookie_headers(cookie))
        assert out.status_code == 200
        silenced_at = time.monotonic()
        seen: list[tuple[float, int]] = []
        while time.monotonic() - silenced_at < 15:
            status = await _session_status(api, b, cookie)
            seen.append((round(time.monotonic() - silenced_at, 2), status))
            if status == 401:
                break
            await asyncio.sleep(0.1)
        # B missed the logout message; it stopped trusting its cache once the feed went quiet for the
        # deadline (plus one PING interval and a poll), not after the cache's 30 s.
        assert seen[-1][1] == 401, seen
        assert seen[-1][0] <= FEED_DEADLINE + 2.5, seen
        assert {s for _, s in seen} <= {200, 401}, seen
        for _ in range(5):
            assert await _session_status(api, b, cookie) == 401
        assert await _session_status(api, a, cookie) == 401
    assert _stored(private_redis, peek(cluster).session_id(cookie)) == TOMBSTONE


@pytest.mark.slow
async def test_a_logout_racing_a_sliding_write_from_a_stale_copy_stays_a_logout(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster], relay: TcpRelay, peek: Callable[[Cluster], Peek]
) -> None:
    # Idle timeout 60 s: a read 6 s after the last write slides it (rewrites the record). B holds a copy read
    # before the logout and has not heard of it: its sliding write is exactly the blind SET that used to
    # resurrect the session everywhere.
    cluster = await _a_and_b(replicas, relay, BFF_SESSION_CACHE_SECONDS="30", BFF_SESSION_IDLE_TIMEOUT="60")
    a, b = cluster.replicas
    view = peek(cluster)
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as api:
        cookie = await sign_in(browser, a)
        signed_in = time.monotonic()
        session_id = view.session_id(cookie)
        assert await _session_status(api, b, cookie) == 200  # B caches the copy it read
        await asyncio.sleep(max(0.0, signed_in + 5.0 - time.monotonic()))
        assert relay.silence_subscribers() == 1  # B will not hear of the logout
        out = await api.post(f"{a.url}/auth/logout", headers=cookie_headers(cookie))
        assert out.status_code == 200
        assert _stored(private_redis, session_id) == TOMBSTONE
        # Past the slide point (6 s), well before B could notice its feed is silent (≥ 2 s after silencing).
        await asyncio.sleep(max(0.0, signed_in + 6.3 - time.monotonic()))
        status_b = await _session_status(api, b, cookie)
        status_a = await _session_status(api, a, cookie)
    assert (status_b, status_a) == (401, 401)
    assert _stored(private_redis, session_id) == TOMBSTONE


async def test_a_feed_cut_by_client_kill_is_a_gap_that_empties_the_cache(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster], peek: Callable[[Cluster], Peek]
) -> None:
    # redis-py reconnects and resubscribes a killed pub/sub connection on its own, so nothing fails: the
    # messages published in between are simply lost. Here the kill and the logout's own writes (tombstone,
    # announcement) go to Redis in one pipelined round trip, so B cannot have resubscribed in between.
    cluster = replicas(2, BFF_SESSION_CACHE_SECONDS="30")
    a, b = cluster.replicas
    view = peek(cluster)
    async with httpx2.AsyncClient(timeout=10) as browser, httpx2.AsyncClient(timeout=10) as api:
        cookie = await sign_in(browser, a)
        session_id = view.session_id(cookie)
        assert await _session_status(api, b, cookie) == 200  # cached by B
        with private_redis.client() as r:
            pipe = r.pipeline(transaction=False)
            pipe.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            pipe.set(session_key(session_id), TOMBSTONE, px=int(TOMBSTONE_TTL * 1000))
            pipe.publish(SESSION_EVENTS_CHANNEL, b"test " + session_key(session_id).encode())
            killed, _, listeners = pipe.execute()
        assert (int(killed), listeners) == (2, 0)  # both feeds cut; nobody heard the announcement
        started = time.monotonic()
        statuses = []
        while time.monotonic() - started < 5:
            statuses.append(await _session_status(api, b, cookie))
            if statuses[-1] == 401:
                break
            await asyncio.sleep(0.05)
        waited = time.monotonic() - started
    # B treated the reconnect as a gap and emptied its cache: it does not serve the ended session for the
    # rest of its 30 s cache life.
    assert statuses[-1] == 401 and waited < 1.5, (statuses, waited)
    assert _stored(private_redis, session_id) == TOMBSTONE


async def test_a_stale_refresh_save_cannot_roll_back_a_rotated_refresh_token(
    private_redis: PrivateRedis, replicas: Callable[..., Cluster], peek: Callable[[Cluster], Peek]
) -> None:
    # Two writers on the real Redis: one saves rotated tokens; the other then saves from the copy it read
    # before. The stale save must change nothing, or the next refresh presents a rotated-out token.
    cluster = replicas(1)
    view = peek(cluster)
    other = peek(cluster)
    async with httpx2.AsyncClient(timeout=10) as browser:
        cookie = await sign_in(browser, cluster.replicas[0])
    session_id = view.session_id(cookie)
    stale = await view.manager.load(session_id, cached=False)
    fresh = await other.manager.load(session_id, cached=False)
    assert stale is not None and fresh is not None
    rotated = await other.manager.save(session_id, fresh.with_changes(refresh_token="rotated-newer"))
    assert rotated is not None
    assert await view.manager.save(session_id, stale.with_changes(last_seen_at=time.time())) is None
    stored = await other.manager.load(session_id, cached=False)
    assert stored is not None and stored.refresh_token == "rotated-newer"
    with redis.Redis(port=private_redis.server.port) as r:
        assert r.ttl(session_key(session_id)) > 0
