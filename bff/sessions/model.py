"""The records kept server-side: a signed-in session, and a pending login (keyed by ``state``).

Both serialise to compact JSON with short keys (they are encrypted and stored per user, so bytes count);
``from_bytes`` rejects anything malformed by returning None rather than raising.

The time arithmetic of a token response lives here, once: when the access token is due for refresh, when
the refresh token expires (the provider's ``refresh_expires_in``, else the assumed lifetime), and the
session's absolute end, which never outlives its refresh token (RFC 10017 §6.1.2.2). Times are seconds
on the service's one clock (``create_app(clock=...)``), read by the caller and passed in.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from bff.config import Settings

REFRESH_MARGIN = 60.0  # refresh when the access token expires within this many seconds


def refresh_due_at(issued_at: float, expires_at: float) -> float:
    """60 s before expiry, or half-way through a token that lives less than two minutes."""
    lifetime = expires_at - issued_at
    return issued_at + max(lifetime - REFRESH_MARGIN, lifetime / 2)


class GrantedTokens(Protocol):
    """What a token response grants (:class:`bff.oidc.models.TokenSet`), lifetimes relative to its request."""

    @property
    def access_token(self) -> str: ...
    @property
    def expires_in(self) -> float: ...
    @property
    def refresh_token(self) -> str | None: ...
    @property
    def refresh_expires_in(self) -> float | None: ...
    @property
    def scope(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long sessions may live (``BFF_SESSION_IDLE_TIMEOUT``, ``BFF_SESSION_MAX_LIFETIME``,
    ``BFF_REFRESH_TOKEN_LIFETIME``)."""

    idle_timeout: int
    max_lifetime: int
    refresh_token_lifetime: int  # assumed when the provider does not say (`refresh_expires_in`)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lifetimes:
        return cls(settings.session_idle_timeout, settings.session_max_lifetime, settings.refresh_token_lifetime)

    def absolute_end(self, created_at: float, refresh_expires_at: float | None) -> float:
        end = created_at + self.max_lifetime
        # Never outlive the refresh token (RFC 10017 §6.1.2.2; Duende support 1342).
        return end if refresh_expires_at is None else min(end, refresh_expires_at)


Kind = Literal["browser", "mobile"]


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
    logout_csrf: str  # the CSRF value of the navigation form of logout (GET /auth/logout?sid=...)
    oidc_sid: str | None = None  # the provider's session id (`sid` claim), for back-channel logout
    # When to refresh: 60 s before expiry, or half-way through a token that lives less than two minutes.
    access_refresh_at: float | None = None
    # The Kryptos Connect grant this session uses for data calls (its handle, bff.sessions.connect), if any.
    connect: str | None = None
    kind: Kind = "browser"  # a browser's cookie, or a native app's session token (bff.routes.mobile)
    device: str = "- -"  # what the sign-in's User-Agent said, as codes (bff.sessions.device)
    # The stored record this copy was read from (SHA-1 of its bytes; not serialised). An update is written
    # only while the store still holds exactly that record; "" for a session not stored yet.
    version: str = field(default="", compare=False, repr=False)

    @classmethod
    def signed_in(
        cls,
        *,
        sub: str,
        claims: dict[str, Any],
        oidc_sid: str | None,
        tokens: GrantedTokens,
        scope: str,
        issued_at: float,
        lifetimes: Lifetimes,
        kind: Kind = "browser",
        device: str = "- -",
    ) -> Session:
        """A new session for tokens requested at ``issued_at``."""
        expires_at = issued_at + tokens.expires_in
        refresh_expires: float | None = None
        if tokens.refresh_token:
            lifetime = tokens.refresh_expires_in or lifetimes.refresh_token_lifetime
            refresh_expires = issued_at + lifetime
        return cls(
            sub=sub,
            claims=claims,
            access_token=tokens.access_token,
            access_expires_at=expires_at,
            access_refresh_at=refresh_due_at(issued_at, expires_at),
            refresh_token=tokens.refresh_token,
            refresh_expires_at=refresh_expires,
            scope=tokens.scope or scope,
            created_at=issued_at,
            last_seen_at=issued_at,
            # Without a refresh token the session cannot outlive its access token.
            expires_at=lifetimes.absolute_end(issued_at, refresh_expires if tokens.refresh_token else expires_at),
            logout_csrf=secrets.token_urlsafe(16),
            oidc_sid=oidc_sid,
            kind=kind,
            device=device,
        )

    @classmethod
    def connected_only(cls, grant_handle: str, *, now: float, lifetimes: Lifetimes) -> Session:
        """A session with a Kryptos Connect grant and no OpenID Connect sign-in (a Guest's browser).

        It has no subject and no tokens of its own; it ends by idleness or at the usual absolute end, and the
        grant outlives it (the grant cookie, :mod:`bff.routes.connect`)."""
        return cls(
            sub="",
            claims={},
            access_token="",
            access_expires_at=now,
            refresh_token=None,
            refresh_expires_at=None,
            scope="",
            created_at=now,
            last_seen_at=now,
            expires_at=now + lifetimes.max_lifetime,
            logout_csrf=secrets.token_urlsafe(16),
            connect=grant_handle,
        )

    @property
    def signed_in_with_oidc(self) -> bool:
        return bool(self.sub)

    def refreshed(self, tokens: GrantedTokens, *, issued_at: float, now: float, lifetimes: Lifetimes) -> Session:
        """This session with the tokens of a refresh requested at ``issued_at``."""
        expires_at = issued_at + tokens.expires_in
        # Unless the provider says otherwise, a rotated refresh token lives no longer than the first one
        # (whose expiry was fixed at sign-in from `refresh_expires_in` or the assumed lifetime).
        refresh_expires = (
            issued_at + tokens.refresh_expires_in if tokens.refresh_expires_in else self.refresh_expires_at
        )
        return replace(
            self,
            access_token=tokens.access_token,
            access_expires_at=expires_at,
            access_refresh_at=refresh_due_at(issued_at, expires_at),
            refresh_token=tokens.refresh_token or self.refresh_token,
            refresh_expires_at=refresh_expires,
            scope=tokens.scope or self.scope,
            expires_at=min(self.expires_at, lifetimes.absolute_end(self.created_at, refresh_expires)),
            last_seen_at=now,
        )

    def remaining(self, now: float, lifetimes: Lifetimes) -> float:
        """Seconds until the session ends by idleness or by its absolute end, whichever is first."""
        return min(self.last_seen_at + lifetimes.idle_timeout, self.expires_at) - now

    def index_entry(self) -> IndexEntry:
        """What the user's index says of this session (:class:`IndexEntry`)."""
        # Whole seconds, rounded so that the entry never ends before the session does: a listing never prunes
        # (and records as ended) a session that still has a moment to live.
        return IndexEntry(
            self.kind,
            self.device,
            int(self.created_at),
            math.ceil(self.last_seen_at),
            math.ceil(self.expires_at),
        )

    def with_changes(self, **changes: Any) -> Session:
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        record: dict[str, Any] = {
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
            "lo": self.logout_csrf,
            "sid": self.oidc_sid,
            "ar": self.access_refresh_at,
        }
        if self.connect is not None:  # only when there is one: bytes per session count
            record["cg"] = self.connect
        if self.kind == "mobile":  # likewise: a browser's is the default
            record["k"] = "m"
        if self.device != "- -":
            record["dv"] = self.device
        return json.dumps(record, separators=(",", ":")).encode()

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
                logout_csrf=d["lo"],
                oidc_sid=d.get("sid"),
                access_refresh_at=None if d.get("ar") is None else float(d["ar"]),
                connect=d.get("cg"),
                kind="mobile" if d.get("k") == "m" else "browser",
                device=str(d.get("dv", "- -")),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A session as its user's index describes it, so the user's sessions can be listed (and judged live or
    ended) from that one hash, without reading any session: kind, device codes, created, last seen, absolute
    end. Rewritten with every write of the session (which is when ``last_seen_at`` moves), and a few dozen
    bytes, so the index stays a compact hash in Redis."""

    kind: Kind
    device: str
    created_at: int
    last_seen_at: int
    expires_at: int

    def to_bytes(self) -> bytes:
        kind = "m" if self.kind == "mobile" else "b"
        return f"{kind} {self.device} {self.created_at} {self.last_seen_at} {self.expires_at}".encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> IndexEntry | None:
        """None for anything else, such as the ``1`` of an entry written before entries described sessions."""
        try:
            kind, browser, system, created, seen, end = data.decode().split(" ")
            return cls("mobile" if kind == "m" else "browser", f"{browser} {system}", int(created), int(seen), int(end))
        except (ValueError, UnicodeDecodeError):
            return None

    def ends_at(self, lifetimes: Lifetimes) -> float:
        return min(self.last_seen_at + lifetimes.idle_timeout, self.expires_at)


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
