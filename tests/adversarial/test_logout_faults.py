"""Logout under faults, and what Redis knows of a session.

* Logout (and a sign-in that replaces a session) ends the record first, then revokes the tokens: while the
  provider is being told, no replica may still serve the session.
* Back-channel logout remembers a logout token's ``jti`` only after the sessions are gone: when Redis fails
  half-way, the provider's retry of the same token must work, not be refused as a replay.
* Redis never holds a raw session id (key, hash field or value): with a cookie-signing key, one would mint
  that user's cookie.

The stack is in-process bff + the emulator over real HTTP, on a real Redis; the one fault is injected at the
store seam (one call fails as if Redis had dropped it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx2
import redis

from bff.errors import SessionStoreUnavailable
from bff.sessions.manager import TOMBSTONE
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import session_key
from tests.adversarial.conftest import CSRF, PrivateRedis
from tests.support.idp_tamper import id_token_claims, publish_test_key, sign
from tests.support.stack import CLIENT_ID, Stack, start_stack


class FlakyStore:
    """A real RedisStore whose next call of a named method fails once, as a dropped connection would."""

    def __init__(self, inner: RedisStore) -> None:
        self._inner = inner
        self.fail_once: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self.fail_once:
            return attribute

        async def failing(*args: Any, **kwargs: Any) -> Any:
            self.fail_once.discard(name)
            raise SessionStoreUnavailable("injected: Redis dropped this call")

        return failing


def _session_id(stack: Stack, client: httpx2.AsyncClient) -> str:
    session_id = stack.services.session_codec.unsign(client.cookies[stack.settings.session_cookie_name])
    assert session_id is not None
    return session_id


def _watch_revocations(stack: Stack, private_redis: PrivateRedis, session_id: str) -> list[bytes | None]:
    """What the session's record held each time the provider received a revocation."""
    seen: list[bytes | None] = []

    def at_revocation(request: httpx2.Request, response: httpx2.Response) -> httpx2.Response:
        if request.url.path.endswith("/token/revocation"):
            with private_redis.client() as r:
                seen.append(r.get(session_key(session_id)))
        return response

    stack.idp.rewriters.append(at_revocation)
    return seen


async def test_logout_ends_the_record_before_the_provider_hears_of_it(
    private_redis: PrivateRedis, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(redis_url=private_redis.url)
    async with stack.client() as client:
        await stack.login(client, "guest")
        session_id = _session_id(stack, client)
        seen = _watch_revocations(stack, private_redis, session_id)
        out = await client.post(f"{stack.url}/auth/logout", headers={**CSRF, "Origin": stack.url})
        assert out.status_code == 200
    assert seen == [TOMBSTONE, TOMBSTONE]  # refresh token, then access token: both after the record ended


async def test_a_replaced_session_ends_first_and_its_tokens_are_revoked(
    private_redis: PrivateRedis, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(redis_url=private_redis.url)
    async with stack.client() as client:
        await stack.login(client, "guest")
        first = _session_id(stack, client)
        first_tokens = stack.idp.token_responses()[-1]
        seen = _watch_revocations(stack, private_redis, first)
        await stack.login(client, "guest")  # same browser signs in again: a new id, the old session replaced
        assert _session_id(stack, client) != first
    assert seen == [TOMBSTONE, TOMBSTONE]
    for token in (first_tokens["access_token"], first_tokens["refresh_token"]):
        assert (await stack.introspect(token))["active"] is False


def _logout_token(stack: Stack, claims: dict[str, Any]) -> str:
    now = int(claims["iat"])
    return sign(
        {
            "iss": stack.settings.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 120,
            "jti": str(uuid.uuid4()),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
            "sub": claims["sub"],
            "sid": claims["sid"],
        }
    )


async def test_a_backchannel_logout_that_failed_half_way_succeeds_on_the_providers_retry(
    private_redis: PrivateRedis,
) -> None:
    store = FlakyStore(RedisStore.from_url(private_redis.url))
    stack = start_stack(redis_url=private_redis.url, store=store)
    stack.idp.rewriters.append(publish_test_key)
    try:
        await _logout_then_retry(stack, store)
    finally:
        stack.stop()


async def _logout_then_retry(stack: Stack, store: FlakyStore) -> None:
    async with stack.client() as client, httpx2.AsyncClient() as provider:
        await stack.login(client, "guest")
        token = _logout_token(stack, id_token_claims(stack.idp.token_responses()[-1]["id_token"]))
        store.fail_once.add("index_members")  # Redis fails while the sessions are being looked up
        first = await provider.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": token})
        assert first.status_code == 503
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
        retry = await provider.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": token})
        assert retry.status_code == 200, retry.text
        assert (await client.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 401
        replay = await provider.post(f"{stack.url}/auth/backchannel-logout", data={"logout_token": token})
        assert replay.status_code == 400  # once it took effect, the same token is a replay


def _everything_in(r: redis.Redis) -> list[bytes]:
    """Every key name, hash field, member and value in Redis, as bytes."""
    found: list[bytes] = []
    for key in r.scan_iter(count=1000):
        found.append(key)
        kind = r.type(key)
        if kind == b"string":
            found.append(r.get(key) or b"")  # type: ignore[arg-type]
        elif kind == b"hash":
            for field, value in r.hgetall(key).items():
                assert isinstance(field, bytes) and isinstance(value, bytes)  # no decode_responses
                found.extend((field, value))
        elif kind == b"set":
            found.extend(r.smembers(key))  # type: ignore[arg-type]
    return found


async def test_redis_never_holds_a_raw_session_id(
    private_redis: PrivateRedis, make_stack: Callable[..., Stack]
) -> None:
    stack = make_stack(redis_url=private_redis.url)
    async with stack.client() as a, stack.client() as b:
        await stack.login(a, "guest")
        await stack.login(b, "guest")  # two sessions of one user: the per-user index has two members
        ids = [_session_id(stack, a), _session_id(stack, b)]
        assert (await a.get(f"{stack.url}/auth/session", headers=CSRF)).status_code == 200
    with private_redis.client() as r:
        everything = _everything_in(r)
        assert any(r.type(k) == b"hash" for k in r.scan_iter()), "the per-user index exists"
    assert len(everything) > 4
    for session_id in ids:
        assert not any(session_id.encode() in item for item in everything)
