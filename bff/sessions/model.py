"""The records kept server-side: a signed-in session, and a pending login (keyed by ``state``).

Both serialise to compact JSON with short keys (they are encrypted and stored per user, so bytes count);
``from_bytes`` rejects anything malformed by returning None rather than raising.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Session:
    sub: str
    claims: dict[str, Any]  # display claims from the ID token (name, email, preferred_username, ...)
    access_token: str
    access_expires_at: float
    refresh_token: str | None
    refresh_expires_at: float | None
    scope: str
    created_at: float
    last_seen_at: float
    expires_at: float  # absolute end: min(created + max lifetime, refresh token expiry)
    logout_sid: str  # CSRF value for the navigation form of logout (GET /auth/logout?sid=)
    oidc_sid: str | None = None  # the provider's session id (`sid` claim), for back-channel logout
    # When to refresh: 60 s before expiry, or half-way through a token that lives less than two minutes.
    access_refresh_at: float | None = None
    # The stored record this copy was read from (SHA-1 of its bytes; not serialised). An update is written
    # only while the store still holds exactly that record; "" for a session not stored yet.
    version: str = field(default="", compare=False, repr=False)

    def with_changes(self, **changes: Any) -> Session:
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "u": self.sub,
                "c": self.claims,
                "a": self.access_token,
                "ae": self.access_expires_at,
                "r": self.refresh_token,
                "re": self.refresh_expires_at,
                "s": self.scope,
                "ca": self.created_at,
                "ls": self.last_seen_at,
                "ex": self.expires_at,
                "lo": self.logout_sid,
                "sid": self.oidc_sid,
                "ar": self.access_refresh_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Session | None:
        try:
            d = json.loads(data)
            return cls(
                sub=d["u"],
                claims=d["c"],
                access_token=d["a"],
                access_expires_at=float(d["ae"]),
                refresh_token=d["r"],
                refresh_expires_at=None if d["re"] is None else float(d["re"]),
                scope=d["s"],
                created_at=float(d["ca"]),
                last_seen_at=float(d["ls"]),
                expires_at=float(d["ex"]),
                logout_sid=d["lo"],
                oidc_sid=d.get("sid"),
                access_refresh_at=None if d.get("ar") is None else float(d["ar"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class LoginState:
    """What the callback needs to finish a login started by this browser (RFC 9700 §2.1, §4.7)."""

    code_verifier: str
    nonce: str
    return_to: str
    binding_hash: str  # SHA-256 of the browser-binding cookie's id
    redirect_uri: str
    issuer: str
    created_at: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "v": self.code_verifier,
                "n": self.nonce,
                "rt": self.return_to,
                "b": self.binding_hash,
                "ru": self.redirect_uri,
                "i": self.issuer,
                "ca": self.created_at,
                "x": self.extra,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LoginState | None:
        try:
            d = json.loads(data)
            return cls(
                code_verifier=d["v"],
                nonce=d["n"],
                return_to=d["rt"],
                binding_hash=d["b"],
                redirect_uri=d["ru"],
                issuer=d["i"],
                created_at=float(d["ca"]),
                extra=d.get("x") or {},
            )
        except (ValueError, KeyError, TypeError):
            return None
