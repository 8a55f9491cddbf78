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
from typing import Protocol


class KeyValueStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, *, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (> 0)."""

    async def get_and_delete(self, key: str) -> bytes | None:
        """Atomically read and remove: the single-use primitive for login state."""

    async def delete(self, key: str) -> None: ...

    async def set_if_absent(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Store only when the key does not exist; True when stored. Locks and replay caches use it."""

    async def expire_if_equal(self, key: str, value: bytes, *, ttl: float) -> bool:
        """Reset the TTL only while the key still holds ``value`` (a lock's owner renewing its lease)."""

    async def delete_if_equal(self, key: str, value: bytes) -> bool:
        """Delete only while the key still holds ``value`` (a lock released by its owner, never another's)."""

    async def index_add(self, key: str, member: str, *, ttl: float) -> None:
        """Add ``member`` to the set at ``key`` and keep the set for at least ``ttl`` seconds."""

    async def index_members(self, key: str) -> list[str]: ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Tell every other process sharing this store (best effort, at most once)."""

    def subscribe(self, channel: str) -> AsyncIterator[bytes | None]:
        """Messages published on ``channel``. Yields None once the subscription is live (and nothing is
        missed from then on); raises :class:`~bff.errors.SessionStoreUnavailable` when it breaks."""
        ...

    async def ping(self) -> None:
        """Raise :class:`~bff.errors.SessionStoreUnavailable` when the store cannot answer."""

    async def aclose(self) -> None: ...


def _digest(value: str) -> str:
    # Ids are hashed before they become key names: reading Redis (or a backup) yields no usable cookie id.
    return hashlib.sha256(value.encode()).hexdigest()[:40]


def session_key(session_id: str) -> str:
    return f"bff:{{{_digest(session_id)}}}:session"


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


def logout_token_key(jti: str) -> str:
    return f"bff:bcl-jti:{_digest(jti)}"
