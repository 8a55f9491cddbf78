"""Kryptos Connect grant records (bff.sessions.connect) on both stores: encrypted, findable by each of their
handles, forgotten completely, and scheduled for the idle sweep. Also the store operations they added."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis

from bff.sessions.connect import ConnectGrant, ConnectGrants
from bff.sessions.crypto import Keyring
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import (
    CONNECT_LAST_USE_KEY,
    KeyValueStore,
    connect_grant_id_key,
    connect_grant_key,
    connect_subject_key,
)
from tests.support.clock import Clock

START = 1_800_000_000.0
FIFTEEN_YEARS = 473_040_000


def _grant(now: float = START, sub: str | None = None) -> ConnectGrant:
    return ConnectGrant(
        access_token="cat_" + secrets.token_urlsafe(24),
        grant_id="cgrant_" + secrets.token_hex(8),
        workspace_id="ws_" + secrets.token_hex(4),
        scope="openid integrations:read",
        created_at=now,
        expires_at=now + FIFTEEN_YEARS,
        sub=sub,
    )


def _only(pairs: list[tuple[str, str]], *grants: ConnectGrant) -> list[tuple[str, str]]:
    """The schedule is one key shared with every other test on this Redis: look at our grants only."""
    ids = {g.grant_id for g in grants}
    return [pair for pair in pairs if pair[1] in ids]


async def test_record_round_trip_and_handles(store: KeyValueStore) -> None:
    grants = ConnectGrants(store, Keyring(["k" * 32]), Clock(START))
    grant = _grant()
    reference = await grants.create(grant)
    handle = grants.handle(reference)
    assert handle != reference and reference not in handle  # Redis knows only the digest
    loaded = await grants.load(handle)
    assert loaded == grant and loaded is not None and loaded.version
    assert await grants.handle_for_grant(grant.grant_id) == handle
    assert await grants.handles_for_subject("someone") == []
    assert "cat_" not in repr(loaded) and grant.access_token not in repr(loaded)


async def test_binding_to_a_subject_is_compare_and_set(store: KeyValueStore) -> None:
    grants = ConnectGrants(store, Keyring(["k" * 32]), Clock(START))
    grant = _grant()
    handle = grants.handle(await grants.create(grant))
    loaded = await grants.load(handle)
    assert loaded is not None and loaded.usable_by("") and loaded.usable_by("user-1")
    bound = await grants.bind(handle, loaded, "user-1")
    assert bound is not None and bound.sub == "user-1"
    assert await grants.handles_for_subject("user-1") == [handle]
    # A second binding from the stale copy finds the record changed and writes nothing.
    assert await grants.bind(handle, loaded, "user-2") is None
    again = await grants.load(handle)
    assert again is not None and again.sub == "user-1"
    assert again.usable_by("user-1") and not again.usable_by("user-2") and not again.usable_by("")


async def test_forget_removes_every_trace(store: KeyValueStore) -> None:
    grants = ConnectGrants(store, Keyring(["k" * 32]), Clock(START))
    grant = _grant(sub="user-9")
    handle = grants.handle(await grants.create(grant))
    assert await grants.handles_for_subject("user-9") == [handle]
    assert _only(await grants.idle_since(START, limit=1000), grant) == [(handle, grant.grant_id)]
    await grants.forget(handle, grant.grant_id, "user-9")
    assert await grants.load(handle) is None
    assert await grants.handle_for_grant(grant.grant_id) is None
    assert await grants.handles_for_subject("user-9") == []
    assert _only(await grants.idle_since(START + 10**9, limit=1000), grant) == []
    assert await store.get(connect_grant_key(handle)) is None


async def test_idle_schedule_orders_by_last_use(store: KeyValueStore) -> None:
    clock = Clock(START)
    grants = ConnectGrants(store, Keyring(["k" * 32]), clock)
    first, second = _grant(), _grant()
    h1 = grants.handle(await grants.create(first))
    clock.advance(100)
    h2 = grants.handle(await grants.create(second))
    assert _only(await grants.idle_since(START + 50, limit=1000), first, second) == [(h1, first.grant_id)]
    clock.advance(100)
    await grants.used(h1, first)  # used again: now the later one
    assert _only(await grants.idle_since(START + 150, limit=1000), first, second) == [(h2, second.grant_id)]
    both = _only(await grants.idle_since(START + 1000, limit=1000), first, second)
    assert both == [(h2, second.grant_id), (h1, first.grant_id)]  # oldest first
    for handle, grant in ((h1, first), (h2, second)):
        await grants.forget(handle, grant.grant_id)


async def test_record_is_encrypted_and_bound_to_its_key(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    raw = aioredis.from_url(redis_url)
    try:
        grants = ConnectGrants(store, Keyring(["k" * 32]), Clock(START))
        grant = _grant()
        handle = grants.handle(await grants.create(grant))
        blob = await raw.get(connect_grant_key(handle))
        assert blob is not None
        assert b"cat_" not in blob and grant.access_token.encode() not in blob
        assert grant.grant_id.encode() not in blob and grant.workspace_id.encode() not in blob
        # Moved to another grant's key, the record does not decrypt (the key name is associated data).
        other = grants.handle(await grants.create(_grant()))
        await raw.set(connect_grant_key(other), blob)
        assert await grants.load(other) is None
        # Another keyring reads nothing.
        assert await ConnectGrants(store, Keyring(["x" * 32]), Clock(START)).load(handle) is None
        ttl = await raw.ttl(connect_grant_key(handle))
        assert ttl > FIFTEEN_YEARS - 86400  # the token's own lifetime, not a session's
        # The grant id is findable (revocation by an administrator), the subject index holds handles only.
        assert await raw.get(connect_grant_id_key(grant.grant_id)) == handle.encode()
        assert await raw.zscore(CONNECT_LAST_USE_KEY, f"{handle} {grant.grant_id}") == START
        assert await raw.exists(connect_subject_key("nobody")) == 0
    finally:
        await raw.aclose()
        await store.aclose()


async def test_hash_and_schedule_operations(store: KeyValueStore) -> None:
    key = f"bff:test:{secrets.token_hex(6)}"
    await store.hash_set(key, "a", b"1")
    await store.hash_set(key, "b", b"2")
    await store.hash_set(key, "a", b"3")
    assert await store.hash_get_all(key) == {"a": b"3", "b": b"2"}
    await store.hash_delete(key, "a")
    assert await store.hash_get_all(key) == {"b": b"2"}
    await store.delete(key)
    assert await store.hash_get_all(key) == {}

    schedule = f"bff:test:{secrets.token_hex(6)}"
    await store.schedule(schedule, "late", 300.0)
    await store.schedule(schedule, "early", 100.0)
    await store.schedule(schedule, "middle", 200.0)
    assert await store.due(schedule, 250.0, limit=10) == ["early", "middle"]
    assert await store.due(schedule, 1000.0, limit=2) == ["early", "middle"]
    await store.schedule(schedule, "early", 400.0)  # moved
    assert await store.due(schedule, 1000.0, limit=10) == ["middle", "late", "early"]
    await store.unschedule(schedule, "middle")
    assert await store.due(schedule, 1000.0, limit=10) == ["late", "early"]
    await store.delete(schedule)

    index = f"bff:test:{secrets.token_hex(6)}"
    await store.index_add(index, "m1", ttl=60)
    await store.index_add(index, "m2", ttl=60)
    await store.index_remove(index, "m1")
    assert await store.index_members(index) == ["m2"]
    await store.delete(index)
