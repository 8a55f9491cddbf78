"""A user's index describes each of their sessions, so they are listed from it alone; ending a session
removes it; entries of sessions Redis expired on its own are pruned when read. Both stores."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bff.sessions.memory_store import MemoryStore
from bff.sessions.model import IndexEntry
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import (
    SESSION_SWEEP_LOCK_KEY,
    KeyValueStore,
    provider_session_index_key,
    public_handle,
    session_handle,
    session_key,
    subject_index_key,
)
from tests.sessions.test_store import LIFETIMES, START, _manager, _session
from tests.support.clock import Clock
from tests.support.redis_server import RedisServer


def _audit(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.audit for r in caplog.records if r.name == "bff.audit" and r.audit["event"] == event]  # type: ignore[attr-defined]


def _sub() -> str:
    return "user-" + secrets.token_hex(6)


async def test_each_write_of_a_session_describes_it_in_the_users_index(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub, sid = _sub(), "s-" + secrets.token_hex(8)
    saved = await manager.save(sid, _session(clock(), sub=sub, kind="mobile", device="sf io"))
    assert saved is not None
    entries = await store.index_entries(subject_index_key(sub))
    assert entries == {session_handle(sid): f"m sf io {int(START)} {int(START)} {int(START) + 86400}".encode()}
    assert len(entries[session_handle(sid)]) <= 64  # Redis keeps hashes of values this short compact
    clock.advance(600)  # past a tenth of the idle timeout: the read slides, and the entry moves with it
    assert await manager.load(sid) is not None
    entry = IndexEntry.from_bytes((await store.index_entries(subject_index_key(sub)))[session_handle(sid)])
    assert entry is not None and entry.last_seen_at == int(START) + 600 and entry.kind == "mobile"
    listed = await manager.sessions_of(sub)
    assert [(s.handle, s.public, s.entry.device) for s in listed] == [
        (session_handle(sid), public_handle(session_handle(sid)), "sf io")
    ]


async def test_listing_reads_only_the_users_index_and_prunes_what_ended_unseen(
    store: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub = _sub()
    idle, busy, old = ("s-" + secrets.token_hex(8) for _ in range(3))
    await manager.save(idle, _session(clock(), sub=sub))
    await manager.save(old, _session(clock(), sub=sub, expires_at=clock() + 2000))
    clock.advance(1000)
    await manager.save(busy, _session(clock(), sub=sub))
    clock.advance(1000)  # `idle` is 2000 s idle (timeout 1800), `old` past its absolute end; `busy` is alive
    assert {s.handle for s in await manager.sessions_of(sub)} == {session_handle(busy)}
    assert set(await store.index_members(subject_index_key(sub))) == {session_handle(busy)}
    outs = _audit(caplog, "sign_out")
    assert sorted((e["reason"], e["target"]["session"]) for e in outs) == sorted(
        [("idle", public_handle(session_handle(idle))), ("absolute", public_handle(session_handle(old)))]
    )
    caplog.clear()
    await manager.sessions_of(sub)
    assert _audit(caplog, "sign_out") == []  # pruned once, recorded once


async def test_an_entry_from_before_entries_described_sessions_is_read_once_and_rewritten(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub, live, gone = _sub(), "s-" + secrets.token_hex(8), "s-" + secrets.token_hex(8)
    await manager.save(live, _session(clock(), sub=sub))
    index = subject_index_key(sub)
    # As the previous release wrote them: the member and a bare "1".
    await store.index_add(index, session_handle(live), ttl=60, value=b"1")
    await store.index_add(index, session_handle(gone), ttl=60, value=b"1")
    assert [s.handle for s in await manager.sessions_of(sub)] == [session_handle(live)]
    entries = await store.index_entries(index)
    assert list(entries) == [session_handle(live)]  # the dead member is gone, the live one described
    assert IndexEntry.from_bytes(entries[session_handle(live)]) is not None
    # And it is ended like any other ("end everywhere else" must not miss a session from before the upgrade).
    assert len(await manager.end_all(sub, reason="user")) == 1


async def test_ending_a_session_leaves_both_indexes_and_only_ends_the_named_subjects(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub, other = _sub(), _sub()
    mine, theirs = "s-" + secrets.token_hex(8), "s-" + secrets.token_hex(8)
    await manager.save(mine, _session(clock(), sub=sub, oidc_sid="op-9"))
    await manager.save(theirs, _session(clock(), sub=other))
    # An index member naming someone else's session ends nothing.
    assert await manager.end_handle(session_handle(theirs), reason="admin", sub=sub) is None
    assert await manager.load(theirs) is not None
    ended = await manager.end(mine, reason="user", actor=sub)
    assert ended is not None and ended.sub == sub
    assert await store.index_entries(subject_index_key(sub)) == {}
    assert await store.index_entries(provider_session_index_key("op-9")) == {}
    assert await manager.end(mine, reason="user") is None  # already ended: nothing to end, nothing recorded
    assert await store.get(session_key(mine)) is not None  # the tombstone


async def test_a_session_judged_expired_on_read_says_idle_or_absolute(
    store: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bff.audit")
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub = _sub()
    sid = "s-" + secrets.token_hex(8)
    await manager.save(sid, _session(clock(), sub=sub))
    clock.advance(LIFETIMES.idle_timeout + 1)
    assert await store.get(session_key(sid)) is not None  # the store has not expired it (its clock did not move)
    assert await manager.load(sid) is None
    assert [(e["reason"], e["target"]["sub"]) for e in _audit(caplog, "sign_out")] == [("idle", sub)]
    assert await store.index_entries(subject_index_key(sub)) == {}


@pytest.fixture(params=["memory", "redis"])
async def own_store(request: pytest.FixtureRequest) -> AsyncIterator[KeyValueStore]:
    """Both stores, the Redis one a private server: the sweep's schedule is one key, and a sweep whose clock
    is ahead would take every other test's live sessions in a shared Redis for ended."""
    if request.param == "memory":
        yield MemoryStore()
        return
    server = RedisServer().start()
    store = RedisStore.from_url(server.url)
    try:
        yield store
    finally:
        await store.aclose()
        server.stop()


async def test_the_sweep_records_sessions_that_ended_unseen_once_and_leaves_live_ones(
    own_store: KeyValueStore, caplog: pytest.LogCaptureFixture
) -> None:
    store = own_store
    caplog.set_level(logging.INFO, logger="bff.audit")
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub = _sub()
    quiet, used, logged_out = ("s-" + secrets.token_hex(8) for _ in range(3))
    for sid in (quiet, used, logged_out):
        await manager.save(sid, _session(clock(), sub=sub))
    await manager.end(logged_out, reason="user")  # ended by hand: no longer scheduled
    clock.advance(LIFETIMES.idle_timeout - 100)
    assert await manager.load(used) is not None  # used again: its end moves later
    clock.advance(101)
    assert await manager.sweep_ended() == 1  # only `quiet` was due
    outs = _audit(caplog, "sign_out")
    assert [(e["reason"], e["target"]["session"], e["client"], e["request_id"]) for e in outs][-1] == (
        "idle",
        public_handle(session_handle(quiet)),
        None,
        None,
    )
    assert set(await store.index_members(subject_index_key(sub))) == {session_handle(used)}
    caplog.clear()
    assert await manager.sweep_ended() == 0  # nothing left due: recorded once
    assert [s.handle for s in await manager.sessions_of(sub)] == [session_handle(used)]
    assert _audit(caplog, "sign_out") == []
    clock.advance(LIFETIMES.idle_timeout)
    assert await manager.sweep_ended() == 1
    assert [e["reason"] for e in _audit(caplog, "sign_out")] == ["idle"]
    assert await store.index_entries(subject_index_key(sub)) == {}


async def test_one_replica_sweeps_at_a_time(own_store: KeyValueStore) -> None:
    store = own_store
    clock = Clock(start=START)
    manager = _manager(store, clock)
    await store.set(SESSION_SWEEP_LOCK_KEY, b"another replica", ttl=30)
    try:
        sub = _sub()
        await manager.save("s-" + secrets.token_hex(8), _session(clock(), sub=sub))
        clock.advance(LIFETIMES.idle_timeout + 1)
        assert await manager.sweep_ended() == 0  # the other replica holds the lock
        assert len(await store.index_members(subject_index_key(sub))) == 1
    finally:
        await store.delete(SESSION_SWEEP_LOCK_KEY)
    assert await manager.sweep_ended() == 1
    assert await store.get(SESSION_SWEEP_LOCK_KEY) is None  # released after the round
