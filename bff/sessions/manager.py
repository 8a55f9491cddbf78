"""Sessions and login states on top of any :class:`~bff.sessions.store.KeyValueStore`.

Owns the rules, written once for every store: values are encrypted (AES-GCM, key name as associated
data); a session expires after ``BFF_SESSION_IDLE_TIMEOUT`` of inactivity or at its absolute end, both
checked on read (not only by the store's TTL); the idle timeout slides without a write per request — the
record is rewritten only once a tenth of the idle timeout has passed since the last write; a record
encrypted under an older key is re-encrypted when next written. Login state is single use (get-and-delete).

A session that ended stays ended, whatever replica or stale copy tries to write it:

* every update is conditional (compare-and-set in one store step): it is written only while the store
  still holds the very record the update was made from (:attr:`Session.version`), so a sliding write or a
  refresh save from a stale copy — another replica's cache, a read that a logout overtook — changes nothing;
* ending a session leaves a **tombstone** in its place for :data:`TOMBSTONE_TTL` seconds, longer than any
  process may cache a session (``BFF_SESSION_CACHE_SECONDS`` is capped at 60): every replica reads it as
  "ended", and no conditional update can match it.

Every write or delete of a session is announced on :data:`~bff.sessions.store.SESSION_EVENTS_CHANNEL`, so
each process's :class:`~bff.sessions.cache.SessionCache` can drop its copy (see that module). The
per-user indexes (a user's sessions by ``sub``, back-channel logout by provider ``sid``) hold session
*handles* (digests), never session ids. The ``sub`` index describes each session
(:class:`~bff.sessions.model.IndexEntry`, rewritten with every write of the session), so a user's sessions
are listed from that one hash (:meth:`SessionManager.sessions_of`); a session that ends leaves both indexes.
Every ending goes through :meth:`SessionManager.end_handle` (or, for one judged expired on read,
:meth:`SessionManager._expired`) and is one ``sign_out`` event of the audit trail (:mod:`bff.audit`), with why.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from bff import audit, metrics
from bff.errors import SessionStoreUnavailable
from bff.sessions.cache import SessionCache
from bff.sessions.crypto import Keyring
from bff.sessions.lock import RefreshLock
from bff.sessions.model import IndexEntry, Lifetimes, LoginState, Session
from bff.sessions.store import (
    SESSION_ENDS_KEY,
    SESSION_EVENTS_CHANNEL,
    SESSION_SWEEP_LOCK_KEY,
    KeyValueStore,
    handle_of_member,
    login_key,
    logout_token_key,
    provider_session_index_key,
    public_handle,
    record_version,
    session_handle,
    session_key,
    session_key_for_handle,
    subject_index_key,
)

_COMPRESSED = b"z"  # plaintext marker; uncompressed records are JSON and start with "{"
LOGIN_STATE_TTL = 300  # 5 minutes: how long a started login may take (RFC 9700 §4.7.1 single-use state).
TOMBSTONE = b"\x00ended"  # never a valid ciphertext (those start with a key id)
TOMBSTONE_TTL = 150.0  # seconds; more than twice the longest a process may cache a session (60 s)
_END_ATTEMPTS = 5  # reads of a session being ended while it keeps changing (refreshes landing) before giving up
_LOGOUT_TOKEN_MEMORY = 900  # seconds a back-channel logout token's jti is remembered
log = logging.getLogger("bff.sessions")

# Why a session ended (the audit trail's ``sign_out`` reasons, README "Audit trail").
SignOutReason = Literal[
    "user",  # its user: logout, or ending it from another device
    "admin",  # an administrator's force sign-out
    "idle",  # BFF_SESSION_IDLE_TIMEOUT passed without a request
    "absolute",  # its absolute end (BFF_SESSION_MAX_LIFETIME, or the refresh token's end)
    "back_channel",  # the provider's back-channel logout
    "refresh_refused",  # the provider refused to refresh its tokens
    "replaced",  # a new sign-in in the same browser
    "access_token_expired",  # no refresh token, and the access token expired
    "upstream_rejected",  # Kryptos refused its freshly refreshed token
    "handoff_refused",  # a native app's hand-off code exchange failed (bff.routes.mobile)
    "unreadable",  # its record cannot be decrypted (a retired key, tampering)
    "connect_revoked",  # a Connect-only session whose grant is gone (bff.services.connect)
]


@dataclass(frozen=True, slots=True)
class Listed:
    """One live session of a user, as :meth:`SessionManager.sessions_of` found it in the user's index."""

    handle: str  # the session's handle (its key name's digest): stays on the server
    public: str  # what the user and the audit trail are shown (store.public_handle)
    entry: IndexEntry


class SessionManager:
    def __init__(
        self,
        store: KeyValueStore,
        keyring: Keyring,
        *,
        lifetimes: Lifetimes,
        clock: Callable[[], float],
        cache: SessionCache | None = None,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self.lifetimes = lifetimes
        self.clock = clock  # the service's one clock (create_app(clock=...)): every time reading goes through it
        self._slide_after = max(1.0, lifetimes.idle_timeout / 10)
        self.cache = cache
        self._origin = secrets.token_hex(8).encode()  # our own announcements come back to us: skip them

    def __repr__(self) -> str:
        return f"SessionManager(store={self._store!r})"

    def remaining(self, session: Session, now: float | None = None) -> float:
        """Seconds until the session ends by idleness or by its absolute end, whichever is first."""
        return session.remaining(self.clock() if now is None else now, self.lifetimes)

    def refresh_lock(self, session_id: str, lease: float) -> RefreshLock:
        return RefreshLock(self._store, session_id, lease)

    async def ping(self) -> None:
        await self._store.ping()

    async def load(self, session_id: str, *, cached: bool = True) -> Session | None:
        """The live session, or None. Slides the idle timeout when a meaningful fraction has passed.

        ``cached=False`` always reads the store (the refresh path, under its lock, must see the latest).
        """
        handle = session_handle(session_id)
        key = session_key_for_handle(handle)
        session = self.cache.get(key) if cached and self.cache is not None else None
        if session is None:
            session = await self._read(handle)
            if session is None:
                return None
        now = self.clock()
        if self.remaining(session, now) <= 0:
            await self._expired(key, handle, session, now)
            return None
        if now - session.last_seen_at >= self._slide_after:
            slid = await self.save(session_id, session.with_changes(last_seen_at=now))
            if slid is None:
                # The record changed (or ended) since this copy was read: what the store holds now wins.
                fresh = await self._read(handle)
                return fresh if fresh is not None and self.remaining(fresh, now) > 0 else None
            session = slid
        return session

    async def _read(self, handle: str) -> Session | None:
        key = session_key_for_handle(handle)
        epoch = self.cache.epoch if self.cache is not None else 0
        blob = await self._store.get(key)
        if blob is None or blob == TOMBSTONE:
            return None
        session = self._decode(key, blob)
        if session is None:
            # Unreadable (a removed key, tampering): of no further use to anyone.
            if await self._end(key, record_version(blob)):
                metrics.sessions_ended.labels(reason="unreadable").inc()
                audit.record("sign_out", target={"session": public_handle(handle)}, reason="unreadable")
            return None
        if self.cache is not None:
            self.cache.put(key, session, epoch=epoch)
        return session

    async def save(self, session_id: str, session: Session) -> Session | None:
        """Store ``session`` and return it as stored (with its new version).

        A session read from the store (it has a version) is written only if the store still holds that
        version; None when it does not (changed or ended meanwhile: nothing was written). A new session
        (no version) is created only where nothing is stored.
        """
        now = self.clock()
        ttl = self.remaining(session, now)
        key = session_key(session_id)
        if ttl <= 0:
            await self._expired(key, session_handle(session_id), session, now)
            return None
        blob = self._encode(key, session)
        if session.version:
            stored = await self._store.replace_if_unchanged(key, session.version, blob, ttl=ttl)
        else:
            stored = await self._store.set_if_absent(key, blob, ttl=ttl)
        if not stored:
            return None
        saved = session.with_changes(version=record_version(blob))
        await self._changed(key, saved)
        # The indexes (the user's sessions by `sub`, back-channel logout by the provider's `sid`) hold handles
        # (digests). An index lives as long as the longest session in it; an ending session leaves it (_forget).
        handle = session_handle(session_id)
        if session.sub:  # a Connect-only session has no subject to be listed or logged out by
            entry = saved.index_entry()
            await self._store.index_add(
                subject_index_key(session.sub), handle, ttl=self.lifetimes.max_lifetime, value=entry.to_bytes()
            )
            # When it ends unless used again: the sweep records its ending and takes it out of the index.
            await self._store.schedule(SESSION_ENDS_KEY, f"{handle} {session.sub}", entry.ends_at(self.lifetimes))
        if session.oidc_sid:
            await self._store.index_add(
                provider_session_index_key(session.oidc_sid), handle, ttl=self.lifetimes.max_lifetime
            )
        return saved

    async def end(self, session_id: str, *, reason: SignOutReason, actor: str | None = None) -> Session | None:
        """End the session everywhere and return what it held (its tokens are the caller's to revoke), or None
        when nothing live was stored. ``actor``: the ``sub`` of who ended it, when someone did."""
        return await self.end_handle(session_handle(session_id), reason=reason, actor=actor)

    async def end_handle(
        self,
        handle: str,
        *,
        reason: SignOutReason,
        actor: str | None = None,
        sub: str | None = None,
        provider_sid: str | None = None,
    ) -> Session | None:
        """End the session of ``handle``: a tombstone takes its place (every process drops its copy), it leaves
        its indexes, and the audit trail says why. With ``sub`` (or ``provider_sid``) only a session of that
        subject (provider session) is ended: an index member never ends someone else's session.

        Returns what the session held (its tokens, for the caller to revoke) to exactly one caller: the
        tombstone replaces only the very record that was read, so of two replicas ending it at once one gets
        the session and the other None, and a refresh landing in between is read again and ended too."""
        key = session_key_for_handle(handle)
        for _ in range(_END_ATTEMPTS):
            blob = await self._store.get(key)
            if blob is None or blob == TOMBSTONE:
                if sub:  # ended already; an ending that failed after its tombstone may have left the entry
                    await self._forget(handle, sub, None)
                return None
            session = self._decode(key, blob)
            if session is None:  # unreadable (a retired key, tampering): of no use to anyone, nothing to revoke
                if await self._end(key, record_version(blob)) and sub:
                    await self._forget(handle, sub, None)
                return None
            if (sub and session.sub != sub) or (provider_sid and session.oidc_sid != provider_sid):
                return None  # a hash collision or a stale member
            if await self._store.replace_if_unchanged(key, session.version, TOMBSTONE, ttl=TOMBSTONE_TTL):
                break
            # Changed since it was read: ended by someone else, or a refresh or sliding write landed. Again.
        else:
            raise SessionStoreUnavailable("The session kept changing while it was being ended; try again.")
        try:
            await self._changed(key, None)
        except SessionStoreUnavailable:
            # Ended (the tombstone is what every replica reads); only the notice to drop cached copies failed,
            # and a replica that cannot hear the feed bypasses its cache (follow_changes).
            log.warning("session ended but its change notice was not sent", extra={"reason": "redis"})
        await self._ended(handle, session, reason, actor)
        return session

    async def _expired(self, key: str, handle: str, session: Session, now: float) -> None:
        """A session judged over on read (or on a late write): only the very record judged ends."""
        if await self._end(key, session.version):
            metrics.sessions_ended.labels(reason="expired").inc()
            await self._ended(handle, session, "absolute" if now >= session.expires_at else "idle", None)

    async def _ended(self, handle: str, session: Session, reason: SignOutReason, actor: str | None) -> None:
        """After the tombstone: what remains can fail without undoing the ending, so it never aborts it (the
        caller still gets the session, whose tokens it revokes, and the ending is recorded)."""
        try:
            await self._forget(handle, session.sub, session.oidc_sid)
        except SessionStoreUnavailable:
            # The entry stays until the next ending by handle, a listing or the sweep drops it.
            log.warning("session ended but not taken out of its indexes", extra={"reason": "redis"})
        audit.record(
            "sign_out",
            actor=actor,
            target={"sub": session.sub or None, "session": public_handle(handle)},
            reason=reason,
            kind=session.kind,
        )

    async def _forget(self, member: str, sub: str, oidc_sid: str | None) -> None:
        if sub:
            await self._store.index_remove(subject_index_key(sub), member)
            await self._store.unschedule(SESSION_ENDS_KEY, f"{member} {sub}")
        if oidc_sid:
            await self._store.index_remove(provider_session_index_key(oidc_sid), member)

    async def _end(self, key: str, version: str | None) -> bool:
        """Leave a tombstone (only over the record of ``version``, when given); True when one was left."""
        if version:
            # Only the record that was judged expired or unreadable: a newer one (a refresh that landed
            # meanwhile) is left alone.
            if not await self._store.replace_if_unchanged(key, version, TOMBSTONE, ttl=TOMBSTONE_TTL):
                return False
        else:
            await self._store.set(key, TOMBSTONE, ttl=TOMBSTONE_TTL)
        await self._changed(key, None)
        return True

    async def _changed(self, key: str, session: Session | None) -> None:
        if self.cache is not None:
            self.cache.drop(key)
            if session is not None:
                self.cache.put(key, session, epoch=self.cache.epoch)
        await self._store.publish(SESSION_EVENTS_CHANNEL, self._origin + b" " + key.encode())

    async def follow_changes(self) -> None:
        """Keep the cache honest: drop what other processes changed; bypass the cache while deaf.

        Runs for the life of the process (a lifespan task); resubscribes after any failure.
        """
        if self.cache is None:
            return
        delay = 0.1
        while True:
            try:
                async for message in self._store.subscribe(SESSION_EVENTS_CHANNEL):
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

    async def sessions_of(self, sub: str) -> list[Listed]:
        """The live sessions of ``sub``, read from its index alone: one read, however many sessions everyone
        else has. Entries of sessions that ended unseen (the store's TTL: idle or absolute end) are removed
        here, and their ending recorded."""
        index = subject_index_key(sub)
        now = self.clock()
        live: list[Listed] = []
        for member, value in (await self._store.index_entries(index)).items():
            handle = handle_of_member(member)
            entry = IndexEntry.from_bytes(value)
            if entry is None:  # written before entries described sessions: that session is read, once
                entry = await self._describe(index, member, handle, sub)
                if entry is None:
                    continue
            if entry.ends_at(self.lifetimes) <= now:
                await self._ended_unseen(sub, member, handle, entry, now)
                continue
            live.append(Listed(handle, public_handle(handle), entry))
        return live

    async def _ended_unseen(self, sub: str, member: str, handle: str, entry: IndexEntry, now: float) -> None:
        """A session the store expired on its own (idle or absolute end) leaves the index, and is recorded as
        ended once: by whichever of a listing and the sweep removes its entry first. No request ended it (the
        one that noticed is not its client), so the event names none."""
        await self._store.unschedule(SESSION_ENDS_KEY, f"{member} {sub}")
        if not await self._store.index_remove(subject_index_key(sub), member):
            return
        metrics.sessions_ended.labels(reason="expired").inc()
        audit.record(
            "sign_out",
            target={"sub": sub, "session": public_handle(handle)},
            reason="absolute" if now >= entry.expires_at else "idle",
            kind=entry.kind,
            in_request=False,
        )

    async def sweep_ended(self, *, limit: int = 500) -> int:
        """Record the sessions that ended unseen (Redis expired them on their idle or absolute end) and take
        them out of their users' indexes; one replica at a time. How many it looked at (``limit``: maybe more)."""
        owner = secrets.token_urlsafe(12).encode()
        if not await self._store.set_if_absent(SESSION_SWEEP_LOCK_KEY, owner, ttl=60):
            return 0
        try:
            now = self.clock()
            due = await self._store.due(SESSION_ENDS_KEY, now, limit=limit)
            for scheduled in due:
                handle, _, sub = scheduled.partition(" ")
                value = await self._store.index_get(subject_index_key(sub), handle)
                entry = IndexEntry.from_bytes(value) if value is not None else None
                if entry is None:  # ended and forgotten already (or never described): nothing to record
                    await self._store.unschedule(SESSION_ENDS_KEY, scheduled)
                elif entry.ends_at(self.lifetimes) > now:  # used again after this was scheduled
                    await self._store.schedule(SESSION_ENDS_KEY, scheduled, entry.ends_at(self.lifetimes))
                else:
                    await self._ended_unseen(sub, handle, handle, entry, now)
            return len(due)
        finally:
            await self._store.delete_if_equal(SESSION_SWEEP_LOCK_KEY, owner)

    async def _describe(self, index: str, member: str, handle: str, sub: str) -> IndexEntry | None:
        key = session_key_for_handle(handle)
        blob = await self._store.get(key)
        session = self._decode(key, blob) if blob is not None and blob != TOMBSTONE else None
        if session is None or session.sub != sub:
            await self._store.index_remove(index, member)
            return None
        entry = session.index_entry()
        await self._store.index_add(index, member, ttl=self.lifetimes.max_lifetime, value=entry.to_bytes())
        return entry

    async def end_all(
        self, sub: str, *, reason: SignOutReason, actor: str | None = None, keep: str | None = None
    ) -> list[Session]:
        """End every session of ``sub`` but the one of handle ``keep``; what they held (tokens to revoke)."""
        ended: list[Session] = []
        for member in await self._store.index_members(subject_index_key(sub)):
            handle = handle_of_member(member)
            if handle == keep:
                continue
            session = await self.end_handle(handle, reason=reason, actor=actor, sub=sub)
            if session is not None:
                ended.append(session)
        return ended

    async def delete_for_subject(self, sub: str, *, provider_sid: str | None = None) -> int:
        """End every session of ``sub`` or, with ``provider_sid``, only those of that provider session.

        Back-channel logout (OIDC Back-Channel Logout 1.0 §2.6): with a ``sid`` only that session ends.
        Returns how many sessions were ended.
        """
        if not provider_sid:
            ended = len(await self.end_all(sub, reason="back_channel"))
            await self._store.delete(subject_index_key(sub))
            return ended
        count = 0
        for member in await self._store.index_members(provider_session_index_key(provider_sid)):
            handle = handle_of_member(member)
            if await self.end_handle(handle, reason="back_channel", sub=sub or None, provider_sid=provider_sid):
                count += 1
        return count

    async def logout_token_seen(self, jti: str) -> bool:
        return await self._store.get(logout_token_key(jti)) is not None

    async def remember_logout_token(self, jti: str) -> None:
        """Called once the logout took effect: a retry of a logout that failed half-way is not a replay."""
        await self._store.set(logout_token_key(jti), b"1", ttl=_LOGOUT_TOKEN_MEMORY)

    def _encode(self, key: str, session: Session) -> bytes:
        # Compressed before it is encrypted: tokens are base64 text, and zlib takes ~27 % off a typical
        # record (Redis bytes per session is a goal). Safe here: the ciphertext's length is never shown to
        # anyone who could choose part of the plaintext (no CRIME/BREACH-style oracle).
        return self._keyring.encrypt(_COMPRESSED + zlib.compress(session.to_bytes(), 6), key.encode())

    def _decode(self, key: str, blob: bytes | None) -> Session | None:
        plain = self._keyring.decrypt(blob, key.encode()) if blob is not None else None
        if blob is None or plain is None:
            return None
        if plain[:1] == _COMPRESSED:
            try:
                plain = zlib.decompress(plain[1:])
            except zlib.error:
                return None
        session = Session.from_bytes(plain)  # uncompressed JSON: records written before compression
        return session.with_changes(version=record_version(blob)) if session is not None else None

    async def save_login_state(self, state: str, login: LoginState) -> None:
        key = login_key(state)
        await self._store.set(key, self._keyring.encrypt(login.to_bytes(), key.encode()), ttl=LOGIN_STATE_TTL)

    async def take_login_state(self, state: str) -> LoginState | None:
        key = login_key(state)
        blob = await self._store.get_and_delete(key)
        if blob is None:
            return None
        plain = self._keyring.decrypt(blob, key.encode())
        login = LoginState.from_bytes(plain) if plain is not None else None
        if login is None or self.clock() - login.created_at > LOGIN_STATE_TTL:
            return None
        return login
