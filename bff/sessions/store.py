"""The storage seam: a small byte-level key-value protocol with TTLs, and the key names.

Two implementations pass the same test suite: :class:`~bff.sessions.redis_store.RedisStore` (production)
and :class:`~bff.sessions.memory_store.MemoryStore` (``memory://``, one process only). Everything above this
line (encryption, expiry rules, what a session is) lives in :mod:`bff.sessions.manager`, written once.

Keys of one session share a Redis Cluster hash tag (``{…}``), so later multi-key operations on a session
(its lock, its indexes) stay on one shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Protocol


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (> 0)."""

    async def get_and_delete(self, key: str) -> bytes | None:
        """Atomically read and remove: the single-use primitive for login state."""

    async def delete(self, key: str) -> None: ...

    async def replace_if_unchanged(self, key: str, expected_sha1: str, value: bytes, *, ttl: float) -> bool:
        """Store ``value`` only while the key still holds the value whose SHA-1 hex digest is ``expected_sha1``
        (compare-and-set in one step): an update made from a copy read earlier never overwrites a newer one,
        and never brings back a record that was deleted meanwhile. True when stored."""

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store only when the key does not exist; True when stored. Locks and replay caches use it."""

    async def expire_if_equal(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Reset the TTL only while the key still holds ``value`` (a lock's owner renewing its lease)."""

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete only while the key still holds ``value`` (a lock released by its owner, never another's)."""

    async def index_add(self, key: str, member: str, *, ttl: float, value: bytes = b"1") -> None:
        """Add ``member`` to the index at ``key`` (or replace its ``value``, a few bytes describing it) and keep
        the index for at least ``ttl`` seconds."""

    async def index_members(self, key: str) -> list[str]: ...

    async def index_entries(self, key: str) -> dict[str, bytes]:
        """Every member of the index at ``key`` with its value, in one read."""

    async def index_get(self, key: str, member: str) -> bytes | None:
        """The value of one member of the index at ``key``, or None."""

    async def index_remove(self, key: str, member: str) -> bool:
        """Take ``member`` out of the index at ``key``; True when it was there (so only one of several
        concurrent removers acts on it)."""

    async def hash_set(self, key: str, field: str, value: bytes) -> None:
        """Set one field of the hash at ``key`` (no TTL: kept until removed)."""

    async def hash_get_all(self, key: str) -> dict[str, bytes]: ...

    async def hash_delete(self, key: str, field: str) -> None: ...

    async def schedule(self, key: str, member: str, at: float) -> None:
        """Put ``member`` in the schedule at ``key`` (a sorted set, no TTL) for time ``at``, or move it there."""

    async def due(self, key: str, until: float, *, limit: int) -> list[str]:
        """Up to ``limit`` members of the schedule at ``key`` due at or before ``until``, earliest first."""

    async def unschedule(self, key: str, member: str) -> None: ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Tell every other process sharing this store (best effort, at most once)."""

    def subscribe(self, channel: str) -> AsyncIterator[bytes | None]:
        """Messages published on ``channel``. Yields None once the subscription is live (and nothing is
        missed from then on); raises :class:`~bff.errors.SessionStoreUnavailable` when it breaks."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~bff.errors.SessionStoreUnavailable` when the store cannot answer."""

    async def aclose(self) -> None: ...

    async def rate_limit(self, key: str, *, interval: float, burst: int) -> float:
        """One request through the bucket at ``key`` (GCRA: one request per ``interval`` seconds, bursts of up
        to ``burst``), timed by the store's own clock. 0.0 when admitted (and counted); otherwise the
        seconds until a request would be, and nothing is written."""

    async def window_add(self, key: str, member: str, *, limit: int, window: float) -> float:
        """Add ``member`` to the sliding window at ``key`` (members count for ``window`` seconds, by the
        store's clock) while it holds fewer than ``limit`` members: 0.0 when added, otherwise the seconds
        until there is room, and nothing is added. Callers with different limits may share one window."""

    async def window_remove(self, key: str, member: str) -> None:
        """Take ``member`` out of the window before its time (a pending sign-in that finished)."""


def record_version(blob: bytes) -> str:
    """What :meth:`KeyValueStore.replace_if_unchanged` compares: the SHA-1 hex digest of a stored value. It
    identifies a record for compare-and-set; not a security boundary (records are encrypted and authenticated)."""
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()


def _digest(value: str) -> str:
    # Ids are hashed before they become key names: reading Redis (or a backup) yields no usable cookie id.
    return hashlib.sha256(value.encode()).hexdigest()[:40]


def session_handle(session_id: str) -> str:
    """What Redis may know of a session id: its digest. Indexes hold handles, never ids (a reader of Redis
    who also knew a cookie-signing key could otherwise mint every user's cookie)."""
    return _digest(session_id)


def public_handle(handle: str) -> str:
    """What people and the audit trail are shown of a session (``GET /auth/sessions``): a digest of its
    :func:`session_handle`, so not even the Redis key name leaves the server, let alone the id."""
    return hashlib.sha256(b"bff public session handle " + handle.encode()).hexdigest()[:32]


def public_handle_of(session_id: str) -> str:
    return public_handle(session_handle(session_id))


def handle_of_member(member: str) -> str:
    """The session handle an index member names (members written before handles existed held raw ids)."""
    return member if len(member) == 40 else session_handle(member)


def session_key_for_handle(handle: str) -> str:
    return f"bff:{{{handle}}}:session"


def session_key(session_id: str) -> str:
    return session_key_for_handle(session_handle(session_id))


def login_key(state: str) -> str:
    return f"bff:login:{_digest(state)}"


def refresh_lock_key(session_id: str) -> str:
    # Same hash tag as the session: on Redis Cluster the lock lives on the session's shard.
    return f"bff:{{{_digest(session_id)}}}:refresh-lock"


def subject_index_key(sub: str) -> str:
    return f"bff:ix:sub:{{{_digest(sub)}}}"


def provider_session_index_key(sid: str) -> str:
    return f"bff:ix:sid:{{{_digest(sid)}}}"


SESSION_EVENTS_CHANNEL = "bff:session-events"  # a session changed or ended: drop any cached copy
# Schedule: "<handle> <sub>" of each signed-in session, scored by when it ends unless used again (idle or
# absolute end), so the sessions Redis expires on its own are recorded as ended and leave their user's index
# (SessionManager.sweep_ended). A subject is an identifier, not a credential.
SESSION_ENDS_KEY = "bff:session-ends"
SESSION_SWEEP_LOCK_KEY = "bff:session-sweep-lock"  # one replica sweeps at a time


# Kryptos Connect grants (bff.sessions.connect). A grant record is named by its handle, the digest of the random
# reference the browser's grant cookie holds; the other keys let bff find a record by the grant id (revocation
# by an administrator) or by the OpenID subject it is bound to, and name every grant's last use (the idle
# sweep). The grant id is not a credential (it acts only with the client secret), so it may appear in clear.


def connect_grant_key(handle: str) -> str:
    return f"bff:cg:{{{handle}}}"


def connect_grant_id_key(grant_id: str) -> str:
    return f"bff:cg-id:{{{_digest(grant_id)}}}"


def connect_subject_key(sub: str) -> str:
    return f"bff:cg-sub:{{{_digest(sub)}}}"


CONNECT_LAST_USE_KEY = "bff:cg-last-use"  # schedule: "<handle> <grant id>" scored by the grant's last use
CONNECT_SWEEP_LOCK_KEY = "bff:cg-sweep-lock"  # one replica sweeps idle grants at a time
GRANT_FACTS_KEY = "bff:grant-facts"  # hash: grant id → what transaction-limit answers told us (not secret)


def connect_reference_handle(reference: str) -> str:
    """What Redis may know of a grant cookie's reference: its digest (like :func:`session_handle`)."""
    return _digest(reference)


def logout_token_key(jti: str) -> str:
    return f"bff:bcl-jti:{_digest(jti)}"


class RedisBudget:
    """How much Redis time one request may still spend, over all its Redis calls together.

    A frozen Redis (``SIGSTOP``, a dead host) otherwise holds a request for every call's socket timeout in
    turn, retries included. The edge middleware starts one budget per request (``BFF_REDIS_TIMEOUT``); each
    store call may take at most what is left, and takes its time off it. Work that outlives a request (a
    refresh in flight, the change feed) runs without one and each of its calls gets the store's own timeout.
    """

    __slots__ = ("left",)

    def __init__(self, seconds: float) -> None:
        self.left = seconds


redis_budget: ContextVar[RedisBudget | None] = ContextVar("bff_redis_budget", default=None)


# Abuse limits (bff.services.ratelimit). Each is one small key, hash-tagged like the rest; whatever identifies a
# client (its address, its login binding, the deployment) is hashed into the key name, never written out.


def rate_limit_key(endpoint: str, client: str) -> str:
    """The bucket of one client address (``client`` also names the deployment) on one endpoint."""
    return f"bff:rl:{{{_digest(client)}}}:{endpoint}"


def pending_logins_key(binding_hash: str) -> str:
    """The sign-ins pending for one browser (its login-binding cookie), as a sliding window."""
    return f"bff:{{{_digest(binding_hash)}}}:pending-logins"


def provider_budget_key(provider: str, call: str) -> str:
    """The shared provider budget (``token``, ``userinfo``) or back-off (``token-backoff``, …) of one client id."""
    return f"bff:idp:{{{_digest(provider)}}}:{call}"
