"""The per-session refresh lock, held across processes and replicas (the model is oauth2-proxy's ``Lock``).

:meth:`RefreshLock.obtain` sets the lock key if absent, with a random owner token and a lease;
:meth:`RefreshLock.renew` extends the lease and :meth:`RefreshLock.release` removes it, both only while this
owner holds it (compare-and-expire, compare-and-delete in one store step). A holder that crashes leaves a
lock that simply runs out its lease. The refresh that runs under it is :mod:`bff.services.tokens`.
"""

from __future__ import annotations

import secrets

from bff.sessions.store import KeyValueStore, refresh_lock_key


class RefreshLock:
    """The per-session lock a refresh runs under, held across processes and replicas (the model is
    oauth2-proxy's ``Lock``): :meth:`obtain` sets it if absent with a random owner token and a lease,
    :meth:`renew` extends the lease and :meth:`release` removes it, both only while this owner holds it."""

    def __init__(self, store: KeyValueStore, session_id: str, lease: float) -> None:
        self._store = store
        self._key = refresh_lock_key(session_id)
        self._owner = secrets.token_bytes(16)
        self.lease = lease

    def __repr__(self) -> str:
        return "RefreshLock(...)"

    async def obtain(self) -> bool:
        return await self._store.set_if_absent(self._key, self._owner, ttl=self.lease)

    async def renew(self) -> bool:
        return await self._store.expire_if_equal(self._key, self._owner, ttl=self.lease)

    async def release(self) -> None:
        await self._store.delete_if_equal(self._key, self._owner)
