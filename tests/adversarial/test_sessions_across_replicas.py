"""Ending a session from one replica stops every replica serving it at once, even one that holds it in its
session cache; two replicas ending the same session at the same moment end it once.

Two ``bff serve`` processes on one private Redis with a long session cache (30 s). That replica B really serves
the session from its cache is shown by Redis's own count of commands (``INFO commandstats``): a call that reads
no session record. After the session is ended on replica A, B's very next call is refused: the tombstone and
the change feed, not the cache's TTL, decide.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from bff.sessions.manager import TOMBSTONE
from bff.sessions.store import public_handle_of, session_key, subject_index_key
from tests.adversarial.conftest import Peek, PrivateRedis, cookie_headers
from tests.support.audit_trail import audit_events
from tests.support.processes import Cluster, Replica, sign_in

GUEST, ADMIN = "anon_7f3a9c21", "user_admin_ada"
CACHE_SECONDS = 30


def _gets(private_redis: PrivateRedis) -> int:
    with private_redis.client() as r:
        return int(r.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


async def _status(client: httpx2.AsyncClient, replica: Replica, cookie: str) -> tuple[int, str | None]:
    response = await client.get(f"{replica.url}/auth/session", headers=cookie_headers(cookie))
    return response.status_code, response.json().get("code") if response.status_code != 200 else None


async def _cached_on(client: httpx2.AsyncClient, replica: Replica, cookie: str, private_redis: PrivateRedis) -> None:
    """``replica`` serves the session of ``cookie`` from its cache: a call that reads no session record. (A
    replica caches only once its change feed is up, shortly after start: a few tries at most.)"""
    for _ in range(20):
        assert await _status(client, replica, cookie) == (200, None)  # read, and kept
        before = _gets(private_redis)
        assert await _status(client, replica, cookie) == (200, None)
        if _gets(private_redis) == before:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the replica read the session again each time instead of using its cache")


def _events(cluster: Cluster, event: str) -> list[dict[str, Any]]:
    return [e for replica in cluster.replicas for e in audit_events(replica.output()) if e["event"] == event]


async def _revocations(cluster: Cluster) -> int:
    return int((await cluster.control("GET", "stats"))["revocations"])


@pytest.fixture
def two(replicas: Callable[..., Cluster]) -> Cluster:
    # No sweep of ended sessions: its Redis calls would blur the counts of what a request read.
    return replicas(
        2, BFF_SESSION_CACHE_SECONDS=str(CACHE_SECONDS), BFF_ADMIN_SUBJECTS=ADMIN, BFF_SESSION_SWEEP_INTERVAL="0"
    )


async def test_a_session_ended_on_one_replica_is_refused_by_the_next_call_on_another(
    private_redis: PrivateRedis, two: Cluster, peek: Callable[[Cluster], Peek]
) -> None:
    a, b = two.replicas
    view = peek(two)
    async with (
        httpx2.AsyncClient(timeout=10) as laptop,
        httpx2.AsyncClient(timeout=10) as phone,
        httpx2.AsyncClient(timeout=10) as api,
    ):
        mine = await sign_in(laptop, a)
        other = await sign_in(phone, a)
        await _cached_on(api, b, other, private_redis)
        handle = public_handle_of(view.session_id(other))
        ended = await api.delete(f"{a.url}/auth/sessions/{handle}", headers=cookie_headers(mine))
        done = time.monotonic()
        assert (ended.status_code, ended.json()) == (200, {"ended": 1}), ended.text
        # B's very next call: refused, although B's cached copy had most of its 30 s to live.
        assert await _status(api, b, other) == (401, "session_expired")
        refused_after = time.monotonic() - done
        assert await _status(api, a, other) == (401, "session_expired")
        assert await _status(api, b, mine) == (200, None)  # the caller's own session goes on, on both
    with private_redis.client() as r:
        assert r.get(session_key(view.session_id(other))) == TOMBSTONE
    outs = _events(two, "sign_out")
    target = {"sub": GUEST, "session": handle}
    assert [(e["reason"], e["actor"], e["target"]) for e in outs] == [("user", GUEST, target)]
    print(f"\nended on A, refused by B's next call {refused_after * 1000:.1f} ms later (cache TTL {CACHE_SECONDS} s)")


async def test_an_administrators_force_sign_out_is_refused_by_the_next_call_on_another_replica(
    private_redis: PrivateRedis, two: Cluster, peek: Callable[[Cluster], Peek]
) -> None:
    a, b = two.replicas
    view = peek(two)
    async with (
        httpx2.AsyncClient(timeout=10) as laptop,
        httpx2.AsyncClient(timeout=10) as phone,
        httpx2.AsyncClient(timeout=10) as desk,
        httpx2.AsyncClient(timeout=10) as api,
    ):
        first = await sign_in(laptop, a)
        second = await sign_in(phone, b)
        admin = await sign_in(desk, a, "admin")
        await _cached_on(api, b, first, private_redis)
        await _cached_on(api, b, second, private_redis)
        before = await _revocations(two)
        forced = await api.delete(f"{a.url}/api/admin/users/{GUEST}/sessions", headers=cookie_headers(admin))
        done = time.monotonic()
        assert (forced.status_code, forced.json()) == (200, {"sub": GUEST, "ended": 2}), forced.text
        assert await _status(api, b, first) == (401, "session_expired")
        assert await _status(api, b, second) == (401, "session_expired")
        refused_after = time.monotonic() - done
        assert await _status(api, a, admin) == (200, None)
        assert await _revocations(two) - before == 4  # a refresh and an access token per session
    with private_redis.client() as r:
        assert r.hlen(subject_index_key(GUEST)) == 0
        assert r.mget([session_key(view.session_id(c)) for c in (first, second)]) == [TOMBSTONE, TOMBSTONE]
    outs = _events(two, "sign_out")
    assert Counter((e["reason"], e["actor"], e["target"]["sub"]) for e in outs) == {("admin", ADMIN, GUEST): 2}
    assert {e["target"]["session"] for e in outs} == {public_handle_of(view.session_id(c)) for c in (first, second)}
    ended = _events(two, "session_ended")
    assert [(e["scope"], e["ended"], e["actor"], e["target"]) for e in ended] == [("all", 2, ADMIN, {"sub": GUEST})]
    print(f"\nforced out on A, both refused by B within {refused_after * 1000:.1f} ms (cache TTL {CACHE_SECONDS} s)")


async def _race(a: Replica, b: Replica, mine: str, handle: str) -> list[int]:
    """The same DELETE sent to both replicas at the same moment."""
    async with httpx2.AsyncClient(timeout=10) as one, httpx2.AsyncClient(timeout=10) as two:
        # Connections opened first, so both requests leave together.
        await asyncio.gather(one.get(f"{a.url}/healthz"), two.get(f"{b.url}/healthz"))
        answers = await asyncio.gather(
            one.delete(f"{a.url}/auth/sessions/{handle}", headers=cookie_headers(mine)),
            two.delete(f"{b.url}/auth/sessions/{handle}", headers=cookie_headers(mine)),
        )
    for answer in answers:
        assert answer.status_code in (200, 404), answer.text
        if answer.status_code == 404:
            assert answer.json()["code"] == "session_not_found"
    return sorted(r.status_code for r in answers)


ROUNDS = 6


async def test_the_same_session_ended_on_two_replicas_at_once_is_ended_once(
    private_redis: PrivateRedis, two: Cluster, peek: Callable[[Cluster], Peek]
) -> None:
    a, b = two.replicas
    view = peek(two)
    async with httpx2.AsyncClient(timeout=10) as laptop:
        mine = await sign_in(laptop, a)
    targets: list[str] = []
    for _ in range(ROUNDS):
        async with httpx2.AsyncClient(timeout=10) as phone:
            targets.append(await sign_in(phone, b))
    results: list[list[int]] = []
    revoked: list[int] = []
    for target in targets:
        handle = public_handle_of(view.session_id(target))
        before = await _revocations(two)
        results.append(await _race(a, b, mine, handle))
        revoked.append(await _revocations(two) - before)
    outs = Counter(e["target"]["session"] for e in _events(two, "sign_out"))
    sign_outs = [outs[public_handle_of(view.session_id(t))] for t in targets]
    ended = [(e["outcome"], e["ended"]) for e in _events(two, "session_ended")]
    report = {"statuses": results, "revocations": revoked, "sign_outs": sign_outs, "session_ended": ended}
    print("\nrace of two DELETEs, per round:", json.dumps(report))
    assert results == [[200, 404]] * ROUNDS, report
    assert revoked == [2] * ROUNDS, report  # the refresh and the access token, once each
    assert sign_outs == [1] * ROUNDS, report
    assert Counter(ended) == {("success", 1): ROUNDS, ("failure", 0): ROUNDS}, report


async def test_two_replicas_that_both_read_the_session_before_either_ends_it_still_end_it_once(
    private_redis: PrivateRedis, two: Cluster, peek: Callable[[Cluster], Peek]
) -> None:
    """The race above, made certain: Redis holds back every write for a moment (``CLIENT PAUSE … WRITE``), so
    both replicas have found the session and read its record before either can write its tombstone."""
    a, b = two.replicas
    view = peek(two)
    async with httpx2.AsyncClient(timeout=10) as laptop, httpx2.AsyncClient(timeout=10) as phone:
        mine = await sign_in(laptop, a)
        target = await sign_in(phone, b)
        for replica in (a, b):  # the caller's session in both caches: the DELETEs read only what they must
            assert await _status(laptop, replica, mine) == (200, None)
    handle = public_handle_of(view.session_id(target))
    before = await _revocations(two)
    with private_redis.client() as r:
        assert r.execute_command("CLIENT", "PAUSE", "1000", "WRITE")
    statuses = await _race(a, b, mine, handle)
    revoked = await _revocations(two) - before
    outs = [e for e in _events(two, "sign_out") if e["target"]["session"] == handle]
    ended = [(e["outcome"], e["ended"]) for e in _events(two, "session_ended")]
    report = {"statuses": statuses, "revocations": revoked, "sign_outs": len(outs), "session_ended": ended}
    print("\nboth replicas read the record before either wrote:", report)
    assert statuses == [200, 404], report
    assert revoked == 2, report
    assert len(outs) == 1, report
    assert sorted(ended) == [("failure", 0), ("success", 1)], report
