"""The rules that keep a Guest's only handle from being lost (bff.services.connect), service by service against
the emulator and a real Redis: revoke first then forget, the idle sweep, an exchange whose grant cannot be stored.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from bff.errors import BadGateway, SessionStoreUnavailable
from bff.services.connect import ConnectService
from bff.services.upstream import Upstream
from bff.sessions import SessionManager
from bff.sessions.connect import ConnectGrants
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore
from tests.support.clock import Clock
from tests.support.connect import emulator_grants, emulator_requests, widget_public_token
from tests.support.redis_server import RedisServer
from tests.support.stack import MakeStack, Stack

DAY = 86400


class _FailingGrantWrites(RedisStore):
    """A Redis whose writes of grant records fail (as if it went away right after Kryptos minted the token)."""

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        if key.startswith("bff:cg:"):
            raise SessionStoreUnavailable("gone")
        return await super().set_if_absent(key, value, ttl=ttl)


@contextlib.asynccontextmanager
async def _service(
    stack: Stack, redis_url: str, clock: Clock, *, keys: list[str] | None = None, store: KeyValueStore | None = None,
    connect_api_url: str | None = None,
) -> AsyncIterator[ConnectService]:  # fmt: skip
    settings = stack.settings
    if connect_api_url is not None:
        settings = settings.model_copy(update={"connect_api_url": connect_api_url})
    store = store or RedisStore.from_url(redis_url)
    keyring = Keyring(keys or [k.get_secret_value() for k in settings.encryption_keys])
    sessions = SessionManager(store, keyring, lifetimes=Lifetimes.from_settings(settings), clock=clock)
    upstream = Upstream(settings)
    headers = {"X-Client-Id": settings.client_id, "X-Client-Secret": stack.client_secret}
    try:
        yield ConnectService(settings, upstream, ConnectGrants(store, keyring, clock), sessions, store, headers)
    finally:
        await upstream.aclose()
        await store.aclose()


@contextlib.contextmanager
def _private_redis() -> Iterator[str]:
    """The sweep revokes every idle grant in its Redis: give it one no other test writes to."""
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


async def _link_token(service: ConnectService) -> str:
    link, authorized = await service.link_token(None)
    assert not authorized
    return link


async def _public_token(stack: Stack, service: ConnectService) -> str:
    return await widget_public_token(stack, await _link_token(service))


async def test_the_idle_sweep_revokes_at_kryptos_before_forgetting(make_stack: MakeStack) -> None:
    stack = make_stack(connect_idle_timeout=30 * DAY)
    with _private_redis() as redis_url:
        await _sweep_revokes_before_forgetting(stack, redis_url)


async def _sweep_revokes_before_forgetting(stack: Stack, redis_url: str) -> None:
    clock = Clock(2_000_000_000.0)
    async with _service(stack, redis_url, clock) as service:
        kept_ref, kept = await service.exchange(await _public_token(stack, service), sub=None)
        clock.advance(20 * DAY)
        used_ref, used = await service.exchange(await _public_token(stack, service), sub=None)
        clock.advance(11 * DAY)  # the first is now 31 days idle, the second 11

        # Kryptos unreachable: nothing is forgotten, the grant waits for the next round.
        async with _service(stack, redis_url, clock, connect_api_url="http://127.0.0.1:9/connect") as offline:
            assert await offline.sweep_idle() == 0
        assert await service.grants.load(service.grants.handle(kept_ref)) is not None

        revocations = await emulator_requests(stack, "/token/revoke")
        assert await service.sweep_idle() == 1
        live = {g["grant_id"] for g in await emulator_grants(stack)}
        assert kept.grant_id not in live and used.grant_id in live
        assert await service.grants.load(service.grants.handle(kept_ref)) is None
        assert await service.grants.handle_for_grant(kept.grant_id) is None
        assert await service.grants.load(service.grants.handle(used_ref)) is not None
        assert await emulator_requests(stack, "/token/revoke") == revocations + 1


async def test_an_unreadable_grant_is_still_revoked_by_the_sweep(make_stack: MakeStack) -> None:
    # An encryption key was removed: the record cannot be read, but its grant id in the schedule suffices.
    stack = make_stack(connect_idle_timeout=DAY)
    with _private_redis() as redis_url:
        await _unreadable_grant_is_revoked(stack, redis_url)


async def _unreadable_grant_is_revoked(stack: Stack, redis_url: str) -> None:
    clock = Clock(2_100_000_000.0)
    async with _service(stack, redis_url, clock, keys=[secrets.token_urlsafe(32)]) as old:
        reference, grant = await old.exchange(await _public_token(stack, old), sub=None)
    clock.advance(2 * DAY)
    async with _service(stack, redis_url, clock, keys=[secrets.token_urlsafe(32)]) as rotated:
        assert await rotated.grants.load(rotated.grants.handle(reference)) is None  # unreadable now
        assert await rotated.sweep_idle() == 1
        assert grant.grant_id not in {g["grant_id"] for g in await emulator_grants(stack)}
        assert await rotated.grants.handle_for_grant(grant.grant_id) is None


async def test_a_grant_that_cannot_be_stored_is_revoked_at_once(make_stack: MakeStack, redis_url: str) -> None:
    stack = make_stack()
    clock = Clock(2_200_000_000.0)
    async with _service(stack, redis_url, clock, store=_FailingGrantWrites.from_url(redis_url)) as service:
        before = {g["grant_id"] for g in await emulator_grants(stack)}
        revocations = await emulator_requests(stack, "/token/revoke")
        public_token = await _public_token(stack, service)
        with pytest.raises(SessionStoreUnavailable):
            await service.exchange(public_token, sub=None)
        assert await emulator_requests(stack, "/token/revoke") == revocations + 1
        assert {g["grant_id"] for g in await emulator_grants(stack)} == before  # minted, then revoked


async def test_disconnect_keeps_the_grant_when_kryptos_cannot_confirm(make_stack: MakeStack, redis_url: str) -> None:
    stack = make_stack()
    clock = Clock(2_300_000_000.0)
    async with _service(stack, redis_url, clock) as service:
        reference, grant = await service.exchange(await _public_token(stack, service), sub=None)
        handle = service.grants.handle(reference)
        async with _service(stack, redis_url, clock, connect_api_url="http://127.0.0.1:9/connect") as offline:
            with pytest.raises(BadGateway):
                await offline.disconnect(handle, grant)
        assert await service.grants.load(handle) == grant  # still held: the user can try again
        assert grant.grant_id in {g["grant_id"] for g in await emulator_grants(stack)}
        await service.disconnect(handle, grant)
        assert await service.grants.load(handle) is None
        assert grant.grant_id not in {g["grant_id"] for g in await emulator_grants(stack)}
