""" "Give me a fresh access token for this session": the one place a refresh happens.

A refresh redeems a refresh token, and with rotating refresh tokens a second redeem of the same token
makes the provider revoke the whole grant (node oidc-provider does; so does our emulator): one lost race
logs the user out. So a refresh happens only under a per-session lock that holds across processes and
replicas (:class:`~bff.sessions.lock.RefreshLock`; the README's "Sessions, refresh and logout across
replicas"):

* inside one process, concurrent requests of a session share one in-flight refresh (single flight), so
  they do not queue on Redis;
* across processes, the lock is a store key set-if-absent with a random owner token and a lease; only the
  owner renews it (while the token call is in flight, so a slow provider never lets a second redeem start)
  or releases it (compare-and-delete);
* after taking the lock the session is read again: if another process refreshed meanwhile, its tokens are
  used and nothing is redeemed;
* waiters poll for the lock's release for a bounded time, then answer 503 ``refresh_in_progress`` with
  ``Retry-After``; a crashed holder's lease runs out well within that wait.

A refresh, once sent, runs to completion: the provider may rotate the refresh token however late it
answers, and forgetting its answer would make the next refresh present the rotated-out token (reuse: the
grant is revoked). So the flight is a task of its own that no caller's disconnect or impatience cancels:
callers wait at most ``BFF_REFRESH_WAIT`` and then get 503 with ``Retry-After``, while the flight waits up to
:data:`COMPLETION_TIMEOUT` for the provider, keeps renewing the lock (a renewal error is logged, never
allowed to hide a refresh that succeeded), and saves what the provider answered, retrying the save while
Redis is away. Saves are conditional (:mod:`bff.sessions.manager`): a save that meets a record changed
meanwhile (a sliding write) puts the new tokens onto the current record; one that meets an ended session
revokes them.

What a refresh may do to a session is decided here too: ``invalid_grant`` / ``invalid_client`` /
``unauthorized_client`` / ``invalid_scope`` delete it (401 ``session_expired``); any other answer — another
OAuth error (``invalid_request``, ``temporarily_unavailable``, ``server_error``), a 5xx, no answer — is an
outage: the session is kept (502 ``idp_unavailable``) and the next request tries again; a response without
a new refresh token keeps the old one; the session never outlives its refresh token.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math

from bff import audit, metrics
from bff.errors import (
    BffError,
    IdpBusy,
    IdpUnavailable,
    ServiceUnavailable,
    SessionStoreUnavailable,
    TokenRejected,
    session_expired,
)
from bff.oidc.client import OidcClient
from bff.oidc.models import TokenSet
from bff.sessions import Session, SessionManager
from bff.sessions.lock import RefreshLock
from bff.sessions.model import REFRESH_MARGIN
from bff.sessions.store import public_handle_of, redis_budget

log = logging.getLogger("bff.tokens")

# Provider answers that mean the grant is gone for good (RFC 6749 §5.2).
_FATAL_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"})
_POLL_FIRST, _POLL_MAX = 0.02, 0.25
COMPLETION_TIMEOUT = 60.0  # how long a refresh already sent waits for the provider's answer
SAVE_FOR = 30.0  # how long refreshed tokens are kept (under the lock) while the store cannot take them


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
            await self._sessions.end(session_id, reason="access_token_expired")
            metrics.sessions_ended.labels(reason="access_token_expired").inc()
            raise session_expired()
        return await self.refresh(session_id, session)

    async def refresh(self, session_id: str, stale: Session) -> Session:
        """Replace ``stale``'s access token, once for every concurrent caller of this session in this process."""
        task = self._flights.get(session_id)
        if task is None:
            task = asyncio.create_task(self._refresh_across_replicas(session_id, stale.access_token))
            self._flights[session_id] = task
            task.add_done_callback(functools.partial(self._landed, session_id))
        try:
            # shield: a caller going away (client disconnect) or giving up must not cancel the refresh.
            return await asyncio.wait_for(asyncio.shield(task), timeout=self._wait)
        except TimeoutError:
            metrics.refreshes.labels(outcome="gave_up").inc()
            raise self._busy() from None

    def _landed(self, session_id: str, task: asyncio.Task[Session]) -> None:
        self._flights.pop(session_id, None)
        # Every caller may have given up already: the outcome is taken here so that a failure nobody waited
        # for is not reported as "Task exception was never retrieved" (it was logged where it happened).
        if not task.cancelled():
            task.exception()

    def _busy(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "The session is being refreshed; try again in a moment.",
            code="refresh_in_progress",
            headers={"Retry-After": str(max(1, math.ceil(self._lease)))},
        )

    async def _refresh_across_replicas(self, session_id: str, stale_token: str) -> Session:
        # This task outlives the request that started it: it gets no share of that request's Redis budget.
        redis_budget.set(None)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        lock = self._sessions.refresh_lock(session_id, self._lease)
        delay = _POLL_FIRST
        wait_started: float | None = None
        while True:
            current = await self._current(session_id)
            if current.access_token != stale_token:
                self._waited(wait_started, loop.time())
                metrics.refreshes.labels(outcome="reused").inc()
                return current  # refreshed elsewhere while we waited
            if await lock.obtain():
                self._waited(wait_started, loop.time())
                break
            if wait_started is None:
                wait_started = loop.time()
                metrics.lock_waits.inc()
            if loop.time() + delay > deadline:
                self._waited(wait_started, loop.time())
                metrics.refreshes.labels(outcome="gave_up").inc()
                raise self._busy()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)
        done = asyncio.Event()
        renewer = asyncio.create_task(self._renew(lock, done))
        try:
            # Read again under the lock: another replica may have refreshed between our read and the lock.
            current = await self._current(session_id)
            if current.access_token != stale_token:
                metrics.refreshes.labels(outcome="reused").inc()
                return current
            return await self._redeem(session_id, current)
        finally:
            # The renewer stops at `done` as well as on cancel: a cancellation swallowed inside a store call (a
            # client library's cleanup) must neither hang this refresh nor keep renewing the lock for ever.
            done.set()
            renewer.cancel()
            await asyncio.wait({renewer}, timeout=self._lease)
            with contextlib.suppress(BffError):  # an unreleased lock simply runs out its lease
                await lock.release()

    @staticmethod
    def _waited(started: float | None, now: float) -> None:
        if started is not None:
            metrics.lock_wait_seconds.observe(now - started)

    async def _current(self, session_id: str) -> Session:
        current = await self._sessions.load(session_id, cached=False)
        if current is None:
            raise session_expired()
        return current

    async def _renew(self, lock: RefreshLock, done: asyncio.Event) -> None:
        """Extend the lock's lease every third of it until ``done``."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=lock.lease / 3)
            if done.is_set():
                return
            try:
                if not await lock.renew():
                    log.warning("refresh lock lost while refreshing", extra={"outcome": "lock_lost"})
                    return
            except SessionStoreUnavailable:
                # Keep going: the refresh may already be at the provider, and its answer must be saved.
                log.warning("refresh lock could not be renewed", extra={"outcome": "lock_renew_failed"})

    async def _redeem(self, session_id: str, current: Session) -> Session:
        if current.refresh_token is None:
            await self._sessions.end(session_id, reason="access_token_expired")
            raise session_expired()
        issued = self._sessions.clock()
        try:
            tokens = await self._oidc.refresh(current.refresh_token, http_timeout=COMPLETION_TIMEOUT)
        except TokenRejected as exc:
            metrics.refreshes.labels(outcome="rejected" if exc.error in _FATAL_ERRORS else "failed").inc()
            if exc.error not in _FATAL_ERRORS:
                # invalid_request, temporarily_unavailable, server_error, …: the grant may well be alive.
                log.warning("refresh failed; session kept", extra={"error": exc.error, "outcome": "failed"})
                raise IdpUnavailable("The identity provider could not refresh the session; try again.") from exc
            metrics.sessions_ended.labels(reason="refresh_rejected").inc()
            log.info("refresh refused; session ended", extra={"error": exc.error, "outcome": "rejected"})
            audit.record(
                "refresh_refused",
                outcome="failure",
                target={"sub": current.sub, "session": public_handle_of(session_id)},
                code=exc.error,
            )
            await self._sessions.end(session_id, reason="refresh_refused")
            raise session_expired() from exc
        except (IdpUnavailable, IdpBusy):  # unreachable, or the provider's quota spent: the session is kept
            metrics.refreshes.labels(outcome="failed").inc()
            raise
        saved = await self._store_refreshed(session_id, current, tokens, issued)
        metrics.refreshes.labels(outcome="refreshed").inc()
        log.info("tokens refreshed", extra={"outcome": "refreshed"})
        return saved

    async def _store_refreshed(self, session_id: str, current: Session, tokens: TokenSet, issued: float) -> Session:
        """Save what the provider answered, whatever it takes within :data:`SAVE_FOR` (still under the lock)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAVE_FOR
        base: Session | None = current
        delay = 0.05
        while True:
            try:
                if base is None:
                    base = await self._sessions.load(session_id, cached=False)
                    if base is None:
                        # Ended (logout, back-channel) while the provider was answering: the new tokens
                        # belong to nobody now.
                        await self._revoke(tokens)
                        raise session_expired()
                refreshed = base.refreshed(
                    tokens, issued_at=issued, now=self._sessions.clock(), lifetimes=self._sessions.lifetimes
                )
                saved = await self._sessions.save(session_id, refreshed)
                if saved is not None:
                    return saved
                base = None  # the record changed meanwhile (a sliding write): apply to what is there now
            except SessionStoreUnavailable:
                if loop.time() + delay > deadline:
                    log.error("refreshed tokens could not be saved", extra={"outcome": "save_failed"})
                    raise
                log.warning("refreshed tokens not saved yet; retrying", extra={"outcome": "save_retry"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _revoke(self, tokens: TokenSet) -> None:
        if tokens.refresh_token:
            await self._oidc.revoke(tokens.refresh_token, "refresh_token")
        await self._oidc.revoke(tokens.access_token, "access_token")
