"""Kryptos Connect grants held server-side: the ``cat_`` token a Guest's data lives behind, and its handles.

A Connect access token is valid for 15 years and comes with no refresh token; its ``cgrant_`` grant id is
the only way to revoke it. A Guest has no Kryptos password, so if bff forgot the token that person's data
would be orphaned while the grant lived on. So a grant is kept apart from any browser session:

* the **record** (token, grant id, workspace, scopes, the OpenID subject it is bound to) is encrypted like a
  session (AES-GCM, the key name as associated data) under ``bff:cg:{handle}``. The handle is the digest of
  a random 256-bit **reference**; only the browser's grant cookie holds the reference itself, signed
  (:mod:`bff.routes.connect`), and sessions using the grant hold the handle;
* a **grant-id key** names the handle, so an administrator's revocation (by grant id) finds the record;
* a **subject index** names the handles bound to an OpenID subject, so that user signing in on another
  browser finds the grant again;
* a **last-use schedule** (a sorted set of ``"<handle> <grant id>"`` by time of last use) is how bff expires
  grants: the idle sweep revokes a grant at Kryptos *before* forgetting it (:mod:`bff.services.connect`).
  The grant id is in clear there on purpose: a record that can no longer be decrypted (its encryption key
  was removed) can still be revoked rather than orphaned.

Redis therefore holds these grants for years: the README's "Kryptos Connect" says what the operator must
configure (persistence, no eviction, backups).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from bff.sessions.crypto import Keyring
from bff.sessions.store import (
    CONNECT_LAST_USE_KEY,
    KeyValueStore,
    connect_grant_id_key,
    connect_grant_key,
    connect_reference_handle,
    connect_subject_key,
    record_version,
)


@dataclass(frozen=True, slots=True)
class ConnectGrant:
    access_token: str  # cat_…: never leaves bff except towards Kryptos
    grant_id: str  # cgrant_…: the handle for revoking it
    workspace_id: str
    scope: str
    created_at: float
    expires_at: float  # the token's own end (the exchange's expires_in, 15 years)
    sub: str | None = None  # the OpenID subject it is bound to, once used by a signed-in session
    version: str = field(default="", compare=False, repr=False)

    def __repr__(self) -> str:  # never the token
        return f"ConnectGrant(grant_id={self.grant_id!r}, workspace_id={self.workspace_id!r}, sub={self.sub!r})"

    def usable_by(self, sub: str) -> bool:
        """A grant bound to a subject serves only that subject's sessions; an unbound one, any holder."""
        return self.sub is None or self.sub == sub

    def to_bytes(self) -> bytes:
        record = {
            "a": self.access_token,
            "g": self.grant_id,
            "w": self.workspace_id,
            "s": self.scope,
            "ca": self.created_at,
            "ex": self.expires_at,
            "u": self.sub,
        }
        return json.dumps(record, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ConnectGrant | None:
        try:
            d: dict[str, Any] = json.loads(data)
            return cls(
                access_token=d["a"],
                grant_id=d["g"],
                workspace_id=d["w"],
                scope=d["s"],
                created_at=float(d["ca"]),
                expires_at=float(d["ex"]),
                sub=d.get("u"),
            )
        except (ValueError, KeyError, TypeError):
            return None


class ConnectGrants:
    """The records of :class:`ConnectGrant` and their handles, on any :class:`KeyValueStore`."""

    def __init__(self, store: KeyValueStore, keyring: Keyring, clock: Callable[[], float]) -> None:
        self._store = store
        self._keyring = keyring
        self.clock = clock

    def __repr__(self) -> str:
        return f"ConnectGrants(store={self._store!r})"

    @staticmethod
    def handle(reference: str) -> str:
        return connect_reference_handle(reference)

    async def create(self, grant: ConnectGrant) -> str:
        """Store a new grant; returns its reference (for the browser's grant cookie)."""
        reference = secrets.token_urlsafe(32)
        handle = self.handle(reference)
        ttl = max(60.0, grant.expires_at - self.clock())
        key = connect_grant_key(handle)
        if not await self._store.set_if_absent(key, self._encode(key, grant), ttl=ttl):
            raise RuntimeError("a fresh 256-bit reference collided")  # pragma: no cover - not in this universe
        await self._store.set(connect_grant_id_key(grant.grant_id), handle.encode(), ttl=ttl)
        await self.used(handle, grant)
        if grant.sub:
            await self._store.index_add(connect_subject_key(grant.sub), handle, ttl=ttl)
        return reference

    async def load(self, handle: str) -> ConnectGrant | None:
        key = connect_grant_key(handle)
        blob = await self._store.get(key)
        if blob is None:
            return None
        plain = self._keyring.decrypt(blob, key.encode())
        grant = ConnectGrant.from_bytes(plain) if plain is not None else None
        return replace(grant, version=record_version(blob)) if grant is not None else None

    async def bind(self, handle: str, grant: ConnectGrant, sub: str) -> ConnectGrant | None:
        """Bind an unbound grant to ``sub`` (compare-and-set); None when the record changed meanwhile."""
        bound = replace(grant, sub=sub)
        key = connect_grant_key(handle)
        blob = self._encode(key, bound)
        ttl = max(60.0, grant.expires_at - self.clock())
        if not await self._store.replace_if_unchanged(key, grant.version, blob, ttl=ttl):
            return None
        await self._store.index_add(connect_subject_key(sub), handle, ttl=ttl)
        return replace(bound, version=record_version(blob))

    async def used(self, handle: str, grant: ConnectGrant) -> None:
        """Note that the grant served a request now (the idle sweep counts from here)."""
        await self._store.schedule(CONNECT_LAST_USE_KEY, f"{handle} {grant.grant_id}", self.clock())

    async def handle_for_grant(self, grant_id: str) -> str | None:
        value = await self._store.get(connect_grant_id_key(grant_id))
        return value.decode() if value is not None else None

    async def handles_for_subject(self, sub: str) -> list[str]:
        return await self._store.index_members(connect_subject_key(sub))

    async def idle_since(self, cutoff: float, *, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` ``(handle, grant id)`` pairs last used at or before ``cutoff``, oldest first."""
        pairs = []
        for member in await self._store.due(CONNECT_LAST_USE_KEY, cutoff, limit=limit):
            handle, _, grant_id = member.partition(" ")
            pairs.append((handle, grant_id))
        return pairs

    async def forget(self, handle: str, grant_id: str, sub: str | None = None) -> None:
        """Remove every trace of the grant. Only after Kryptos revoked it, or told us it is gone."""
        await self._store.delete(connect_grant_key(handle))
        if await self.handle_for_grant(grant_id) == handle:
            await self._store.delete(connect_grant_id_key(grant_id))
        await self._store.unschedule(CONNECT_LAST_USE_KEY, f"{handle} {grant_id}")
        if sub:
            await self._store.index_remove(connect_subject_key(sub), handle)

    def _encode(self, key: str, grant: ConnectGrant) -> bytes:
        return self._keyring.encrypt(grant.to_bytes(), key.encode())
