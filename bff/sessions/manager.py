"""Sessions and login states on top of any :class:`~bff.sessions.store.KeyValueStore`.

Owns the rules, written once for every store: values are encrypted (AES-GCM, key name as associated
data); a session expires after ``BFF_SESSION_IDLE_TIMEOUT`` of inactivity or at its absolute end, both
checked on read (not only by the store's TTL); the idle timeout slides without a write per request — the
record is rewritten only once a tenth of the idle timeout has passed since the last write; a record
encrypted under an older key is re-encrypted when next written. Login state is single use (get-and-delete).

Every write or delete of a session is announced on :data:`~bff.sessions.store.SESSION_EVENTS_CHANNEL`, so
each process's :class:`~bff.sessions.cache.SessionCache` can drop its copy (see that module).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections.abc import Callable

from bff import metrics
from bff.errors import SessionStoreUnavailable
from bff.sessions.cache import SessionCache
from bff.sessions.crypto import Keyring
from bff.sessions.model import LoginState, Session
from bff.sessions.store import (
    SESSION_EVENTS_CHANNEL,
    KeyValueStore,
    login_key,
    provider_session_index_key,
    session_key,
    subject_index_key,
)

_COMPRESSED = b"z"  # plaintext marker; uncompressed records are JSON and start with "{"
LOGIN_STATE_TTL = 600  # 10 minutes: how long a started login may take (RFC 9700 §4.7.1 single-use state).
log = logging.getLogger("bff.sessions")


class SessionManager:
    def __init__(
        self,
        store: KeyValueStore,
        keyring: Keyring,
        *,
        idle_timeout: int,
        max_lifetime: int,
        clock: Callable[[], float] = time.time,
        cache: SessionCache | None = None,
    ) -> None:
        self.store = store
        self._keyring = keyring
        self.idle_timeout = idle_timeout
        self.max_lifetime = max_lifetime
        self.clock = clock
        self._slide_after = max(1.0, idle_timeout / 10)
        self.cache = cache
        self._origin = secrets.token_hex(8).encode()  # our own announcements come back to us: skip them

    def __repr__(self) -> str:
        return f"SessionManager(store={self.store!r})"

    def remaining(self, session: Session, now: float | None = None) -> float:
        """Seconds until the session ends by idleness or by its absolute end, whichever is first."""
        now = self.clock() if now is None else now
        return min(session.last_seen_at + self.idle_timeout, session.expires_at) - now

    def absolute_end(self, created_at: float, refresh_expires_at: float | None) -> float:
        end = created_at + self.max_lifetime
        # Never outlive the refresh token (RFC 10017 §6.1.2.2; Duende support 1342).
        return end if refresh_expires_at is None else min(end, refresh_expires_at)

    async def load(self, session_id: str, *, cached: bool = True) -> Session | None:
        """The live session, or None. Slides the idle timeout when a meaningful fraction has passed.

        ``cached=False`` always reads the store (the refresh path, under its lock, must see the latest).
        """
        key = session_key(session_id)
        cache = self.cache if cached else None
        session = cache.get(key) if cache is not None else None
        if session is None:
            epoch = self.cache.epoch if self.cache is not None else 0
            blob = await self.store.get(key)
            if blob is None:
                return None
            session = self._decode(key, blob)
            if session is not None and self.cache is not None:
                self.cache.put(key, session, epoch=epoch)
        now = self.clock()
        if session is None or self.remaining(session, now) <= 0:
            # Unreadable (a removed key, tampering) or expired: the record is of no further use.
            await self.store.delete(key)
            metrics.sessions_ended.labels(reason="expired" if session else "unreadable").inc()
            return None
        if now - session.last_seen_at >= self._slide_after:
            session = session.with_changes(last_seen_at=now)
            await self.save(session_id, session)
        return session

    async def save(self, session_id: str, session: Session) -> None:
        ttl = self.remaining(session)
        key = session_key(session_id)
        if ttl <= 0:
            await self.store.delete(key)
            return
        await self.store.set(key, self._encode(key, session), ttl=ttl)
        await self._changed(key, session)
        # Indexes for back-channel logout (by `sub`, by the provider's `sid`). Members are session ids:
        # the index lives as long as the longest session in it; stale members point at nothing.
        await self.store.index_add(subject_index_key(session.sub), session_id, ttl=self.max_lifetime)
        if session.oidc_sid:
            await self.store.index_add(provider_session_index_key(session.oidc_sid), session_id, ttl=self.max_lifetime)

    async def delete(self, session_id: str) -> None:
        key = session_key(session_id)
        await self.store.delete(key)
        await self._changed(key, None)

    async def _changed(self, key: str, session: Session | None) -> None:
        if self.cache is not None:
            self.cache.drop(key)
            if session is not None:
                self.cache.put(key, session, epoch=self.cache.epoch)
        await self.store.publish(SESSION_EVENTS_CHANNEL, self._origin + b" " + key.encode())

    async def follow_changes(self) -> None:
        """Keep the cache honest: drop what other processes changed; bypass the cache while deaf.

        Runs for the life of the process (a lifespan task); resubscribes after any failure.
        """
        if self.cache is None:
            return
        delay = 0.1
        while True:
            try:
                async for message in self.store.subscribe(SESSION_EVENTS_CHANNEL):
                    if message is None:  # subscribed: from now on nothing is missed
                        self.cache.clear(live=True)
                        delay = 0.1
                        continue
                    origin, _, key = message.partition(b" ")
                    if origin != self._origin:
                        self.cache.drop(key.decode())
            except SessionStoreUnavailable:
                log.warning("session change feed lost; cache bypassed until it is back", extra={"reason": "redis"})
            self.cache.clear(live=False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def delete_for_subject(self, sub: str, *, provider_sid: str | None = None) -> int:
        """End every session of ``sub`` or, with ``provider_sid``, only those of that provider session.

        Back-channel logout (OIDC Back-Channel Logout 1.0 §2.6): with a ``sid`` only that session ends.
        Returns how many sessions were ended.
        """
        index = provider_session_index_key(provider_sid) if provider_sid else subject_index_key(sub)
        ended = 0
        for session_id in await self.store.index_members(index):
            key = session_key(session_id)
            session = self._decode(key, await self.store.get(key))
            if session is None:
                continue
            if (sub and session.sub != sub) or (provider_sid and session.oidc_sid != provider_sid):
                continue  # a hash-collision or a stale member: never end someone else's session
            await self.delete(session_id)
            ended += 1
        if not provider_sid:
            await self.store.delete(index)
        return ended

    def _encode(self, key: str, session: Session) -> bytes:
        # Compressed before it is encrypted: tokens are base64 text, and zlib takes ~27 % off a typical
        # record (Redis bytes per session is a goal). Safe here: the ciphertext's length is never shown to
        # anyone who could choose part of the plaintext (no CRIME/BREACH-style oracle).
        return self._keyring.encrypt(_COMPRESSED + zlib.compress(session.to_bytes(), 6), key.encode())

    def _decode(self, key: str, blob: bytes | None) -> Session | None:
        plain = self._keyring.decrypt(blob, key.encode()) if blob is not None else None
        if plain is None:
            return None
        if plain[:1] == _COMPRESSED:
            try:
                plain = zlib.decompress(plain[1:])
            except zlib.error:
                return None
        return Session.from_bytes(plain)  # uncompressed JSON: records written before compression

    async def save_login_state(self, state: str, login: LoginState) -> None:
        key = login_key(state)
        await self.store.set(key, self._keyring.encrypt(login.to_bytes(), key.encode()), ttl=LOGIN_STATE_TTL)

    async def take_login_state(self, state: str) -> LoginState | None:
        key = login_key(state)
        blob = await self.store.get_and_delete(key)
        if blob is None:
            return None
        plain = self._keyring.decrypt(blob, key.encode())
        login = LoginState.from_bytes(plain) if plain is not None else None
        if login is None or self.clock() - login.created_at > LOGIN_STATE_TTL:
            return None
        return login
