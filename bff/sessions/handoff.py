"""Native apps' records: what an app asked for at the start of a sign-in, and the one-time hand-off code.

The hand-off record (RFC 8252 §7, with PKCE: RFC 7636) maps a one-time code, redirected to the app, to the
session a finished sign-in created. It is encrypted like every record (key name as associated data),
lives :data:`HANDOFF_TTL` seconds, is single use (get-and-delete) and is stored under a hash of the code,
so reading the store yields no usable code. The HTTP side is :mod:`bff.routes.mobile`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bff.sessions.crypto import Keyring
from bff.sessions.store import KeyValueStore

HANDOFF_TTL = 60  # seconds a hand-off code may wait for its exchange


@dataclass(frozen=True, slots=True)
class MobileLogin:
    """What a native app asked for at the start; kept in the (encrypted) login state's ``extra``."""

    redirect_uri: str
    code_challenge: str
    state: str

    def to_extra(self) -> dict[str, Any]:
        return {"mobile": {"ru": self.redirect_uri, "cc": self.code_challenge, "st": self.state}}

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> MobileLogin | None:
        data = extra.get("mobile")
        if not isinstance(data, dict):
            return None
        try:
            return cls(redirect_uri=str(data["ru"]), code_challenge=str(data["cc"]), state=str(data["st"]))
        except KeyError:
            return None


@dataclass(frozen=True, slots=True)
class Handoff:
    session_id: str
    code_challenge: str
    redirect_uri: str
    created_at: float


def _handoff_key(code: str) -> str:
    # Hashed like every other id: reading the store yields no usable code.
    return f"bff:mobile:{hashlib.sha256(code.encode()).hexdigest()}"


class HandoffStore:
    """Hand-off records on any :class:`KeyValueStore`, encrypted with the key name as associated data."""

    def __init__(self, store: KeyValueStore, keyring: Keyring, clock: Callable[[], float]) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return f"HandoffStore(store={self._store!r})"

    async def issue(self, session_id: str, login: MobileLogin) -> str:
        code = secrets.token_urlsafe(32)  # 256 bits
        key = _handoff_key(code)
        record = {"s": session_id, "cc": login.code_challenge, "ru": login.redirect_uri, "ca": self._clock()}
        blob = self._keyring.encrypt(json.dumps(record, separators=(",", ":")).encode(), key.encode())
        await self._store.set(key, blob, ttl=HANDOFF_TTL)
        return code

    async def take(self, code: str) -> Handoff | None:
        """The record, removed in the same step (single use); None when unknown, used or unreadable."""
        key = _handoff_key(code)
        blob = await self._store.get_and_delete(key)
        plain = self._keyring.decrypt(blob, key.encode()) if blob is not None else None
        if plain is None:
            return None
        try:
            d = json.loads(plain)
            return Handoff(str(d["s"]), str(d["cc"]), str(d["ru"]), float(d["ca"]))
        except (ValueError, KeyError, TypeError):
            return None

    def expired(self, handoff: Handoff) -> bool:
        # Checked against our clock as well as the store's TTL, like login state.
        return self._clock() - handoff.created_at > HANDOFF_TTL
