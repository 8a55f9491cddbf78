"""Signed-in sessions without a browser, written with the BFF's own code so Redis holds what a login writes.

A session looks like one a Kryptos login leaves: a ~900-byte JWT-shaped access token valid for hours (so no
refresh happens during the benchmark), a ~60-byte refresh token, the display claims kept by the callback.
The cookie value is the session id signed by :class:`~bff.sessions.cookie.SignedValueCodec` with the
salt the BFF verifies with.
"""

from __future__ import annotations

import base64
import json
import secrets
import time

from redis.asyncio import Redis

from bff.config import DEFAULT_SCOPES, Settings
from bff.sessions import Session, SessionManager
from bff.sessions.cookie import SignedValueCodec, new_session_id
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore

ACCESS_TOKEN_LIFETIME = 6 * 3600
_PIPELINE_BATCH = 2000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _access_token(n: int, now: float) -> str:
    header = _b64(b'{"alg":"RS256","typ":"at+jwt","kid":"bench-key-1"}')
    claims = {
        "iss": "https://oauth.kryptos.io/oidc",
        "sub": f"user_bench_{n:06d}",
        "aud": "https://connect.kryptos.io/api",
        "client_id": "bench",
        "scope": DEFAULT_SCOPES,
        "iat": int(now),
        "exp": int(now) + ACCESS_TOKEN_LIFETIME,
        "jti": secrets.token_urlsafe(16),
        "workspace": f"ws_{n:06d}",
        "pad": secrets.token_urlsafe(240),  # brings the token to the size Kryptos issues (~900 bytes)
    }
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_b64(secrets.token_bytes(256))}"


def make_session(n: int, manager: SessionManager, refresh_lifetime: int) -> Session:
    now = manager.clock()
    refresh_expires = now + refresh_lifetime
    return Session(
        sub=f"user_bench_{n:06d}",
        claims={"name": f"Bench User {n}", "email": f"bench.user.{n}@example.com", "preferred_username": f"bench{n}"},
        access_token=_access_token(n, now),
        access_expires_at=now + ACCESS_TOKEN_LIFETIME,
        refresh_token=secrets.token_urlsafe(45),  # 60 characters
        refresh_expires_at=refresh_expires,
        scope=DEFAULT_SCOPES,
        created_at=now,
        last_seen_at=now,
        expires_at=manager.lifetimes.absolute_end(now, refresh_expires),
        logout_csrf=secrets.token_urlsafe(16),
        oidc_sid=secrets.token_urlsafe(16),
    )


class Seeder:
    """Writes sessions the way the BFF does and hands back the cookie values that name them."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.keyring = Keyring([k.get_secret_value() for k in settings.encryption_keys])
        self.codec = SignedValueCodec([k.get_secret_value() for k in settings.session_secrets], salt="bff.session")
        self._redis_url = redis_url
        self.ids: list[str] = []

    def manager(self, store: KeyValueStore) -> SessionManager:
        return SessionManager(
            store,
            self.keyring,
            lifetimes=Lifetimes.from_settings(self.settings),
            clock=time.time,
        )

    async def seed(self, count: int) -> list[str]:
        """``count`` new sessions through ``SessionManager.save``; returns their cookie values."""
        store = RedisStore.from_url(self._redis_url)
        try:
            manager = self.manager(store)
            ids = [new_session_id() for _ in range(count)]
            for n, session_id in enumerate(ids):
                await manager.save(session_id, make_session(n, manager, self.settings.refresh_token_lifetime))
            # The BFF must read back what was written, or every number after this is meaningless.
            assert await manager.load(ids[0]) is not None, "a seeded session does not load"
        finally:
            await store.aclose()
        self.ids = ids
        return [self.codec.sign(i) for i in ids]

    async def touch(self) -> None:
        """Rewrite the seeded sessions as just used, so a run starts inside the sliding window (no slide
        write is due) however long the benchmark has been running."""
        store = RedisStore.from_url(self._redis_url)
        try:
            manager = self.manager(store)
            for session_id in self.ids:
                session = await manager.load(session_id)
                assert session is not None, "a seeded session expired"
                await manager.save(session_id, session.with_changes(last_seen_at=manager.clock()))
        finally:
            await store.aclose()

    async def seed_bulk(self, count: int) -> list[str]:
        """Many sessions fast: ``SessionManager.save`` on a ``RedisStore`` whose client is a pipeline, so
        every key, index, TTL and encryption is the BFF's own, sent in batches instead of one round trip
        per command."""
        client: Redis = Redis.from_url(self._redis_url)
        try:
            pipe = client.pipeline(transaction=False)
            manager = self.manager(RedisStore(pipe))
            cookies: list[str] = []
            for n in range(count):
                session_id = new_session_id()
                await manager.save(session_id, make_session(n, manager, self.settings.refresh_token_lifetime))
                cookies.append(self.codec.sign(session_id))
                if len(pipe) >= _PIPELINE_BATCH:
                    await pipe.execute()
            await pipe.execute()
        finally:
            await client.aclose()
        return cookies
