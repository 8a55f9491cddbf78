""" "Give me a fresh access token for this session": the one place a refresh happens.

A refresh redeems a refresh token, and with rotating refresh tokens a second redeem of the same token
makes the provider revoke the whole grant (node oidc-provider does; so does our emulator): one lost race
logs the user out. So a refresh happens only under a per-session lock that holds across processes and
replicas (security.md, "What went wrong elsewhere"):

* inside one process, concurrent requests of a session share one in-flight refresh (single flight), so
  they do not queue on Redis;
* across processes, the lock is a store key set-if-absent with a random owner token and a lease; only the
  owner renews it (while the token call is in flight, so a slow provider never lets a second redeem start)
  or releases it (compare-and-delete);
* after taking the lock the session is read again: if another process refreshed meanwhile, its tokens are
  used and nothing is redeemed;
* waiters poll for the lock's release for a bounded time, then answer 503 ``refresh_in_progress`` with
  ``Retry-After``; a crashed holder's lease runs out well within that wait.

What a refresh may do to a session is decided here too: ``invalid_grant`` / ``invalid_client`` delete it
(401 ``session_expired``); a provider outage keeps it (502) so the next request tries again; a response
without a new refresh token keeps the old one; the session never outlives its refresh token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets

from bff import metrics
from bff.errors import IdpUnavailable, ServiceUnavailable, session_expired
from bff.oidc import OidcClient, TokenRejected
from bff.sessions import Session, SessionManager
from bff.sessions.store import refresh_lock_key

log = logging.getLogger("bff.tokens")

REFRESH_MARGIN = 60.0  # refresh when the access token expires within this many seconds
# Provider answers that mean the grant is gone for good (RFC 6749 §5.2).
_FATAL_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"})
_POLL_FIRST, _POLL_MAX = 0.02, 0.25


def refresh_due_at(issued_at: float, expires_at: float) -> float:
    """60 s before expiry, or half-way through a token that lives less than two minutes."""
    lifetime = expires_at - issued_at
    return issued_at + max(lifetime - REFRESH_MARGIN, lifetime / 2)


class TokenService:
    def __init__(self, sessions: SessionManager, oidc: OidcClient, *, lock_lease: float, wait: float) -> None:
        self._sessions = sessions
        self._oidc = oidc
        self._lease = lock_lease
        self._wait = wait
        self._flights: dict[str, asyncio.Task[Session]] = {}

    def needs_refresh(self, session: Session) -> bool:
        due = session.access_refresh_at
        if due is None:
            due = session.access_expires_at - REFRESH_MARGIN
        return self._sessions.clock() >= due

    async def fresh(self, session_id: str, session: Session) -> Session:
        """The session with an access token that is not due for refresh."""
        if not self.needs_refresh(session):
            return session
        if session.refresh_token is None:
            # Nothing to refresh with (no offline_access): the token serves until it really expires.
            if self._sessions.clock() < session.access_expires_at:
                return session
            await self._sessions.delete(session_id)
            metrics.sessions_ended.labels(reason="access_token_expired").inc()
            raise session_expired()
        return await self.refresh(session_id, session)

    async def refresh(self, session_id: str, stale: Session) -> Session:
        """Replace ``stale``'s access token, once for every concurrent caller of this session in this process."""
        task = self._flights.get(session_id)
        if task is None:
            task = asyncio.create_task(self._refresh_across_replicas(session_id, stale.access_token))
            self._flights[session_id] = task
            task.add_done_callback(lambda _: self._flights.pop(session_id, None))
        # shield: one caller going away (client disconnect) must not cancel the others' refresh.
        return await asyncio.shield(task)

    async def _refresh_across_replicas(self, session_id: str, stale_token: str) -> Session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        lock = refresh_lock_key(session_id)
        owner = secrets.token_bytes(16)
        delay = _POLL_FIRST
        wait_started: float | None = None
        while True:
            current = await self._current(session_id)
            if current.access_token != stale_token:
                self._waited(wait_started, loop.time())
                metrics.refreshes.labels(outcome="reused").inc()
                return current  # refreshed elsewhere while we waited
            if await self._sessions.store.set_if_absent(lock, owner, ttl=self._lease):
                self._waited(wait_started, loop.time())
                break
            if wait_started is None:
                wait_started = loop.time()
                metrics.lock_waits.inc()
            if loop.time() + delay > deadline:
                self._waited(wait_started, loop.time())
                metrics.refreshes.labels(outcome="gave_up").inc()
                raise ServiceUnavailable(
                    "The session is being refreshed; try again in a moment.",
                    code="refresh_in_progress",
                    headers={"Retry-After": str(max(1, math.ceil(self._lease)))},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
        renewer = asyncio.create_task(self._renew(lock, owner))
        try:
            # Read again under the lock: another replica may have refreshed between our read and the lock.
            current = await self._current(session_id)
            if current.access_token != stale_token:
                metrics.refreshes.labels(outcome="reused").inc()
                return current
            return await self._redeem(session_id, current)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(Exception):  # an unreleased lock simply runs out its lease
                await self._sessions.store.delete_if_equal(lock, owner)

    @staticmethod
    def _waited(started: float | None, now: float) -> None:
        if started is not None:
            metrics.lock_wait_seconds.observe(now - started)

    async def _current(self, session_id: str) -> Session:
        current = await self._sessions.load(session_id, cached=False)
        if current is None:
            raise session_expired()
        return current

    async def _renew(self, lock: str, owner: bytes) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            if not await self._sessions.store.expire_if_equal(lock, owner, ttl=self._lease):
                log.warning("refresh lock lost while refreshing", extra={"outcome": "lock_lost"})
                return

    async def _redeem(self, session_id: str, current: Session) -> Session:
        if current.refresh_token is None:
            await self._sessions.delete(session_id)
            raise session_expired()
        issued = self._sessions.clock()
        try:
            tokens = await self._oidc.refresh(current.refresh_token)
        except TokenRejected as exc:
            if exc.error in _FATAL_ERRORS:
                metrics.refreshes.labels(outcome="rejected").inc()
                metrics.sessions_ended.labels(reason="refresh_rejected").inc()
                log.info("refresh refused; session ended", extra={"error": exc.error, "outcome": "rejected"})
                await self._sessions.delete(session_id)
                raise session_expired() from exc
            metrics.refreshes.labels(outcome="failed").inc()
            raise
        except IdpUnavailable:
            metrics.refreshes.labels(outcome="failed").inc()
            raise
        # Unless the provider says otherwise, a rotated refresh token lives no longer than the first one
        # (whose expiry was fixed at login from `refresh_expires_in` or the documented lifetime).
        refresh_expires = tokens.refresh_expires_at or current.refresh_expires_at
        updated = current.with_changes(
            access_token=tokens.access_token,
            access_expires_at=tokens.expires_at,
            access_refresh_at=refresh_due_at(issued, tokens.expires_at),
            refresh_token=tokens.refresh_token or current.refresh_token,
            refresh_expires_at=refresh_expires,
            scope=tokens.scope or current.scope,
            expires_at=min(current.expires_at, self._sessions.absolute_end(current.created_at, refresh_expires)),
            last_seen_at=self._sessions.clock(),
        )
        await self._sessions.save(session_id, updated)
        metrics.refreshes.labels(outcome="refreshed").inc()
        log.info("tokens refreshed", extra={"outcome": "refreshed"})
        return updated
