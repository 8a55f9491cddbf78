"""One suite, two stores: the Redis store (against a real server) and the memory store behave the same."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio as aioredis

from bff.errors import SessionStoreUnavailable
from bff.sessions import LoginState, Session, SessionManager
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore, session_key
from tests.support.clock import Clock

LIFETIMES = Lifetimes(idle_timeout=1800, max_lifetime=86400, refresh_token_lifetime=30 * 86400)


START = 1_800_000_000.0  # a fixed time, so stored times compare exactly


def _session(now: float, **changes: object) -> Session:
    base = Session(
        sub="user-1",
        claims={"name": "Ada"},
        access_token="at-" + secrets.token_hex(8),
        access_expires_at=now + 3600,
        refresh_token="rt-" + secrets.token_hex(8),
        refresh_expires_at=now + 30 * 86400,
        scope="openid profile",
        created_at=now,
        last_seen_at=now,
        expires_at=now + 86400,
        logout_csrf="lo",
    )
    return base.with_changes(**changes)


def _manager(store: KeyValueStore, clock: Clock, keys: list[str] | None = None) -> SessionManager:
    return SessionManager(store, Keyring(keys or ["k" * 32]), lifetimes=LIFETIMES, clock=clock)


async def test_set_get_delete(store: KeyValueStore) -> None:
    key = f"bff:test:{secrets.token_hex(8)}"
    assert await store.get(key) is None
    await store.set(key, b"\x00value", ttl=60)
    assert await store.get(key) == b"\x00value"
    await store.delete(key)
    assert await store.get(key) is None


async def test_get_and_delete_is_single_use(store: KeyValueStore) -> None:
    key = f"bff:test:{secrets.token_hex(8)}"
    await store.set(key, b"once", ttl=60)
    assert await store.get_and_delete(key) == b"once"
    assert await store.get_and_delete(key) is None


async def test_session_round_trip_is_encrypted_at_rest(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    session = _session(clock())
    await manager.save("sid-1" + secrets.token_hex(4), session)
    sid = "sid-" + secrets.token_hex(8)
    await manager.save(sid, session)
    raw = await store.get(session_key(sid))
    assert raw is not None and session.refresh_token is not None
    assert session.access_token.encode() not in raw and session.refresh_token.encode() not in raw
    assert await manager.load(sid) == session


async def test_blob_moved_to_another_key_does_not_decrypt(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    a, b = "a-" + secrets.token_hex(8), "b-" + secrets.token_hex(8)
    await manager.save(a, _session(clock()))
    blob = await store.get(session_key(a))
    assert blob is not None
    await store.set(session_key(b), blob, ttl=60)
    assert await manager.load(b) is None


async def test_idle_and_absolute_expiry_are_enforced_on_read(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sid = "s-" + secrets.token_hex(8)
    await manager.save(sid, _session(clock()))
    clock.advance(1799)
    assert await manager.load(sid) is not None  # slides: last seen now
    clock.advance(1799)
    assert await manager.load(sid) is not None
    clock.advance(1801)
    assert await manager.load(sid) is None  # idle for longer than the timeout
    sid2 = "s-" + secrets.token_hex(8)
    await manager.save(sid2, _session(clock(), expires_at=clock() + 100))
    clock.advance(101)
    assert await manager.load(sid2) is None  # past its absolute end even though recently used


async def test_plain_read_writes_nothing_until_a_tenth_of_the_idle_timeout(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sid = "s-" + secrets.token_hex(8)
    await manager.save(sid, _session(clock()))
    before = await store.get(session_key(sid))
    clock.advance(179)
    await manager.load(sid)
    assert await store.get(session_key(sid)) == before  # no write
    clock.advance(2)
    loaded = await manager.load(sid)
    assert loaded is not None and loaded.last_seen_at == clock()
    assert await store.get(session_key(sid)) != before  # written once a tenth (180 s) had passed


async def test_key_rotation_keeps_sessions_and_removal_ends_them(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    old, new = "o" * 32, "n" * 32
    sid = "s-" + secrets.token_hex(8)
    await _manager(store, clock, [old]).save(sid, _session(clock()))
    rotated = _manager(store, clock, [new, old])
    session = await rotated.load(sid)
    assert session is not None
    await rotated.save(sid, session)  # re-encrypted under the newest key when next written
    assert await _manager(store, clock, [new]).load(sid) == session
    sid2 = "s-" + secrets.token_hex(8)
    await _manager(store, clock, [old]).save(sid2, _session(clock()))
    assert await _manager(store, clock, [new]).load(sid2) is None  # only the removed key could read it


async def test_login_state_is_single_use_and_expires(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    login = LoginState("v" * 43, "n", "/", "h", "http://x/cb", "http://idp", clock())
    state = secrets.token_hex(8)
    await manager.save_login_state(state, login)
    assert await manager.take_login_state(state) == login
    assert await manager.take_login_state(state) is None
    await manager.save_login_state(state, login)
    clock.advance(601)
    assert await manager.take_login_state(state) is None


async def test_redis_down_is_a_clean_store_error() -> None:
    from prometheus_client import REGISTRY

    from tests.support.redis_server import free_port

    before = REGISTRY.get_sample_value("bff_redis_errors_total") or 0.0
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    with pytest.raises(SessionStoreUnavailable):
        await store.get("bff:x")
    with pytest.raises(SessionStoreUnavailable):
        await store.ping()
    await store.aclose()
    assert (REGISTRY.get_sample_value("bff_redis_errors_total") or 0.0) - before == 2


async def test_redis_ttl_follows_the_session(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sid = "s-" + secrets.token_hex(8)
    await manager.save(sid, _session(clock(), expires_at=clock() + 600))
    r = aioredis.from_url(redis_url)
    try:
        ttl = await r.pttl(session_key(sid))
        assert 590_000 < ttl <= 600_000  # min(idle 1800 s, 600 s left of the absolute lifetime)
    finally:
        await r.aclose()
        await store.aclose()


async def test_lock_primitives_belong_to_their_owner(store: KeyValueStore) -> None:
    key = f"bff:test:lock:{secrets.token_hex(8)}"
    assert await store.set_if_absent(key, b"owner-a", ttl=5) is True
    assert await store.set_if_absent(key, b"owner-b", ttl=5) is False
    assert await store.expire_if_equal(key, b"owner-b", ttl=30) is False
    assert await store.expire_if_equal(key, b"owner-a", ttl=30) is True
    assert await store.delete_if_equal(key, b"owner-b") is False
    assert await store.get(key) == b"owner-a"  # another owner cannot release it
    assert await store.delete_if_equal(key, b"owner-a") is True
    assert await store.get(key) is None
    assert await store.set_if_absent(key, b"owner-b", ttl=5) is True
    await store.delete(key)


async def test_index_add_and_members(store: KeyValueStore) -> None:
    key = f"bff:test:idx:{secrets.token_hex(8)}"
    assert await store.index_members(key) == []
    await store.index_add(key, "s1", ttl=60)
    await store.index_add(key, "s2", ttl=60)
    await store.index_add(key, "s1", ttl=60)
    assert await store.index_members(key) == ["s1", "s2"]
    await store.index_add(key, "s2", ttl=60, value=b"b ff li 1 2 3")  # a member's value is replaced in place
    assert await store.index_entries(key) == {"s1": b"1", "s2": b"b ff li 1 2 3"}
    await store.index_remove(key, "s1")
    assert await store.index_entries(key) == {"s2": b"b ff li 1 2 3"}
    await store.delete(key)
    assert await store.index_members(key) == []
    assert await store.index_entries(key) == {}


async def test_delete_for_subject_and_provider_session(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    manager = _manager(store, clock)
    sub = "user-" + secrets.token_hex(4)
    a, b, c = (f"{n}-" + secrets.token_hex(6) for n in "abc")
    await manager.save(a, _session(clock(), sub=sub, oidc_sid="op-1"))
    await manager.save(b, _session(clock(), sub=sub, oidc_sid="op-2"))
    await manager.save(c, _session(clock(), sub="someone-else", oidc_sid="op-1"))
    assert await manager.delete_for_subject(sub, provider_sid="op-1") == 1
    assert await manager.load(a) is None
    assert await manager.load(b) is not None
    assert await manager.load(c) is not None  # same provider sid, another user: untouched
    assert await manager.delete_for_subject(sub) == 1
    assert await manager.load(b) is None
    assert await manager.load(c) is not None


async def test_records_are_compressed_and_old_uncompressed_ones_still_read(store: KeyValueStore) -> None:
    clock = Clock(start=START)
    keyring = Keyring(["k" * 32])
    manager = SessionManager(store, keyring, lifetimes=LIFETIMES, clock=clock)
    session = _session(clock(), access_token="eyJ" + "x" * 900)
    sid = "s-" + secrets.token_hex(8)
    await manager.save(sid, session)
    blob = await store.get(session_key(sid))
    assert blob is not None
    assert len(blob) < len(session.to_bytes())  # compressed before encryption
    legacy = "s-" + secrets.token_hex(8)
    key = session_key(legacy)
    await store.set(key, keyring.encrypt(session.to_bytes(), key.encode()), ttl=60)
    assert await manager.load(legacy) == session
