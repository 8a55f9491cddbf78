"""The emulator's in-memory state: codes, login sessions, grants, tokens, limits, counters, request log,
the Connect widget's link and public tokens, users made in the widget, imports and sync jobs.

One event loop serves every request and no handler awaits between reading and writing these maps, so
plain dicts are safe without locks. `reset()` returns to the seeded state; keys survive unless asked.
Time is `now()`: the wall clock plus an offset that `/_emulator/advance-clock` moves, so expiry can be
tested without waiting.
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import httpx2
from starlette.requests import Request

from bff_dev.emulator.config import EmulatorClient, EmulatorConfig, EmulatorUser
from bff_dev.emulator.connect_records import ConnectGrant, LinkToken, PublicToken, SyncJob, iso_seconds
from bff_dev.emulator.keys import KeyStore
from bff_dev.emulator.limits import PLATFORM_DEFAULT, Imported, LimitSetting, initial_imports, resolve


@dataclass
class LoginSession:
    """The provider-side login session; its id is the `sid` claim."""

    sid: str
    sub: str
    auth_time: int
    ended: bool = False


@dataclass
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    sub: str
    scope: list[str]
    nonce: str | None
    code_challenge: str
    sid: str
    auth_time: int
    expires_at: float
    consumed: bool = False
    grant_id: str | None = None  # the grant created when the code was redeemed


@dataclass
class OidcGrant:
    """One authorization: every access and refresh token minted from one code (or issue-tokens call)."""

    grant_id: str
    client_id: str
    sub: str
    scope: list[str]
    sid: str
    auth_time: int
    nonce: str | None
    created_at: float
    revoked: bool = False
    revoked_reason: str | None = None


@dataclass
class AccessTokenRecord:
    token: str
    jti: str
    grant_id: str
    client_id: str
    sub: str
    scope: list[str]
    iat: int
    exp: float


@dataclass
class RefreshTokenRecord:
    token: str
    grant_id: str
    client_id: str
    sub: str
    scope: list[str]
    iat: int
    exp: float
    consumed: bool = False  # rotated out


@dataclass(frozen=True)
class Caller:
    """Whom a data-API call acts for, from an OIDC access token or a Connect `cat_` token."""

    sub: str
    client_id: str
    scope: list[str]


@dataclass
class DataApiFailure:
    """An injected data-API fault; `remaining` None means until cleared."""

    status: int | None = None
    retry_after: int | None = None
    delay_seconds: float | None = None
    remaining: int | None = None


# Faults the token endpoint can be told to play (POST /_emulator/config {"token_failure": ...}):
# "unavailable" → 503 temporarily_unavailable for every grant; "rate_limited" → 429 with Retry-After for every
# grant (Kryptos allows 100 token calls a minute per client); the others are answered to refresh grants only,
# as a 400 with that RFC 6749 §5.2 error code.
TOKEN_FAILURES = (
    "unavailable",
    "rate_limited",
    "invalid_grant",
    "invalid_request",
    "server_error",
    "temporarily_unavailable",
)
RATE_LIMIT_RETRY_AFTER = 2


@dataclass
class RuntimeSettings:
    access_token_ttl: int
    refresh_token_ttl: int
    id_token_ttl: int
    code_ttl: int
    rotate_refresh_tokens: bool
    token_delay_seconds: float = 0.0
    token_failure: str | None = None
    # What discovery advertises in id_token_signing_alg_values_supported (a hostile provider lists "none").
    id_token_algs: tuple[str, ...] = ("RS256",)
    data_api_failure: DataApiFailure | None = None

    @classmethod
    def from_config(cls, config: EmulatorConfig) -> RuntimeSettings:
        return cls(
            access_token_ttl=config.access_token_ttl,
            refresh_token_ttl=config.refresh_token_ttl,
            id_token_ttl=config.id_token_ttl,
            code_ttl=config.code_ttl,
            rotate_refresh_tokens=config.rotate_refresh_tokens,
        )


@dataclass
class Delivery:
    client_id: str
    uri: str
    sub: str
    sid: str | None
    jti: str
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "uri": self.uri,
            "sub": self.sub,
            "sid": self.sid,
            "jti": self.jti,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class Stats:
    token_calls: defaultdict[str, defaultdict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    counters: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        names = (
            "refresh_token_reuse",
            "code_replay",
            "revocations",
            "introspections",
            "userinfo",
            "backchannel_logouts",
            "end_session",
            "data_api",
            "connect_api",
        )
        out: dict[str, Any] = {name: self.counters[name] for name in names}
        out["token"] = {grant_type: dict(outcomes) for grant_type, outcomes in self.token_calls.items()}
        return out


def new_id(prefix: str, nbytes: int = 16) -> str:
    return prefix + secrets.token_urlsafe(nbytes)


class EmulatorState:
    """Holds everything the emulator remembers; routes read and change it through these methods."""

    def __init__(self, config: EmulatorConfig, http_client: httpx2.AsyncClient | None = None) -> None:
        self.config = config
        self.keys = KeyStore()
        # Deliveries of back-channel logout use this client when given (tests pass one with an
        # ASGITransport to a receiver app); otherwise a short-lived client per logout.
        self.http_client = http_client
        self.clients: dict[str, EmulatorClient] = {c.client_id: c for c in config.clients}
        self._init_mutable()

    def _init_mutable(self) -> None:
        self.clock_offset = 0.0
        self.settings = RuntimeSettings.from_config(self.config)
        # Seeded users, plus the users the widget creates (gone again at reset).
        self.users_by_username: dict[str, EmulatorUser] = {u.username: u for u in self.config.users}
        self.users_by_sub: dict[str, EmulatorUser] = {u.sub: u for u in self.config.users}
        self.codes: dict[str, AuthCode] = {}
        self.sessions: dict[str, LoginSession] = {}
        self.grants: dict[str, OidcGrant] = {}
        self.access_tokens: dict[str, AccessTokenRecord] = {}
        self.refresh_tokens: dict[str, RefreshTokenRecord] = {}
        self.requests: deque[dict[str, Any]] = deque(maxlen=1000)
        self.stats = Stats()
        self.deliveries: list[Delivery] = []
        workspace_default = LimitSetting(self.config.workspace_transaction_limit, self.config.workspace_enable_limiter)
        self.workspace_limits: dict[str, LimitSetting] = {
            client_id: LimitSetting(workspace_default.transaction_limit, workspace_default.enable_limiter)
            for client_id in self.clients
        }
        self.connect_grants: dict[str, ConnectGrant] = {}
        for user in self.config.users:
            for seed in user.grants:
                self.connect_grants[seed.grant_id] = ConnectGrant(
                    grant_id=seed.grant_id,
                    client_id=seed.client_id or self.config.default_client_id,
                    sub=user.sub,
                    scopes=seed.scopes,
                    created_at=seed.created_at,
                    expires_at=seed.expires_at,
                    limit=LimitSetting(seed.transaction_limit, seed.enable_limiter),
                )
        self.connect_tokens: dict[str, str] = {}  # `cat_` token -> grant id
        self.link_tokens: dict[str, LinkToken] = {}
        self.public_tokens: dict[str, PublicToken] = {}
        self.sync_jobs: dict[str, SyncJob] = {}
        # sub -> walletId -> what the integration's last sync imported (`limits.py`).
        self.imports: dict[str, dict[str, Imported]] = {}
        for user in self.config.users:
            self._snapshot(user, self.config.default_client_id)

    def reset(self, *, keys: bool = False) -> None:
        """Back to the seeded state; clients are fixed by the config, keys kept unless `keys`."""
        if keys:
            self.keys = KeyStore()
        self._init_mutable()

    def now(self) -> float:
        return time.time() + self.clock_offset

    # --- users and their limits ------------------------------------------------------------------------

    def add_user(self, user: EmulatorUser, client_id: str) -> None:
        """A user made in the widget for `client_id`; their integrations sync at once, under its limit."""
        self.users_by_username[user.username] = user
        self.users_by_sub[user.sub] = user
        self._snapshot(user, client_id)

    def _snapshot(self, user: EmulatorUser, client_id: str) -> None:
        self.imports[user.sub] = initial_imports(user.integrations, self.effective_limit(user.sub, client_id))

    def user_by_email(self, email: str) -> EmulatorUser | None:
        wanted = email.casefold()
        return next((u for u in self.users_by_sub.values() if u.email.casefold() == wanted), None)

    def connect_grant_for(self, sub: str, client_id: str) -> ConnectGrant | None:
        """The user's live Connect grant with this client, else any of theirs (the override lives on it)."""
        mine = [g for g in self.connect_grants.values() if g.sub == sub and self.grant_is_live(g)]
        return next((g for g in mine if g.client_id == client_id), mine[0] if mine else None)

    def effective_limit(self, sub: str, client_id: str) -> int | None:
        """The user's effective transaction import cap; None means no cap. Linked users have none."""
        user = self.users_by_sub[sub]
        if not user.is_guest:
            return None
        grant = self.connect_grant_for(sub, client_id)
        levels = [
            grant.limit if grant is not None else LimitSetting(),
            self.workspace_limits.get(client_id, LimitSetting()),
        ]
        if user.created_in_widget:
            levels.append(LimitSetting(self.config.widget_guest_transaction_limit))
        return resolve([*levels, PLATFORM_DEFAULT])

    # --- Connect grants ------------------------------------------------------------------------------

    def grant_is_live(self, grant: ConnectGrant) -> bool:
        return not grant.revoked and self.now() < iso_seconds(grant.expires_at)

    def live_connect_grant(self, access_token: str) -> ConnectGrant | None:
        """The grant behind a `cat_` token, unless it was revoked or has expired (15 years)."""
        grant = self.connect_grants.get(self.connect_tokens.get(access_token, ""))
        return grant if grant is not None and self.grant_is_live(grant) else None

    def data_caller(self, token: str) -> Caller | None:
        """Who a data-API bearer token acts for: a live `cat_` token or an active OIDC access token."""
        if token.startswith("cat_"):
            grant = self.live_connect_grant(token)
            return None if grant is None else Caller(grant.sub, grant.client_id, grant.scopes.split())
        record = self.active_access_token(token)
        return None if record is None else Caller(record.sub, record.client_id, list(record.scope))

    # --- login sessions and grants -------------------------------------------------------------------

    def start_session(self, sub: str) -> LoginSession:
        session = LoginSession(sid=new_id("", 12), sub=sub, auth_time=int(self.now()))
        self.sessions[session.sid] = session
        return session

    def create_grant(
        self, *, client_id: str, sub: str, scope: list[str], sid: str, auth_time: int, nonce: str | None
    ) -> OidcGrant:
        grant = OidcGrant(
            grant_id=new_id("grant_", 12),
            client_id=client_id,
            sub=sub,
            scope=scope,
            sid=sid,
            auth_time=auth_time,
            nonce=nonce,
            created_at=self.now(),
        )
        self.grants[grant.grant_id] = grant
        return grant

    def revoke_grant(self, grant_id: str, reason: str) -> None:
        """Revoke a grant: every token minted from it stops working (oidc-provider's `revokeByGrantId`)."""
        grant = self.grants.get(grant_id)
        if grant is None or grant.revoked:
            return
        grant.revoked = True
        grant.revoked_reason = reason

    # --- token lookups --------------------------------------------------------------------------------

    def active_access_token(self, token: str) -> AccessTokenRecord | None:
        record = self.access_tokens.get(token)
        if record is None or self.now() >= record.exp:
            return None
        grant = self.grants.get(record.grant_id)
        if grant is None or grant.revoked:
            return None
        return record

    def active_refresh_token(self, token: str) -> RefreshTokenRecord | None:
        record = self.refresh_tokens.get(token)
        if record is None or record.consumed or self.now() >= record.exp:
            return None
        grant = self.grants.get(record.grant_id)
        if grant is None or grant.revoked:
            return None
        return record

    def expire_access_tokens(self) -> int:
        now = self.now()
        count = 0
        for record in self.access_tokens.values():
            if record.exp > now:
                record.exp = now
                count += 1
        return count

    # --- observation -----------------------------------------------------------------------------------

    def record_request(self, request: Request) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.scope["headers"]:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            # Repeated headers are folded as RFC 9110 §5.3 allows, so none is lost from the log.
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.requests.append(
            {
                "method": request.method,
                "path": relative_path(request),
                "full_path": request.scope["path"],
                "query": request.url.query,
                "headers": headers,
                "time": self.now(),
            }
        )

    def count(self, name: str) -> None:
        self.stats.counters[name] += 1

    def count_token(self, grant_type: str, outcome: str) -> None:
        self.stats.token_calls[grant_type][outcome] += 1


ROOT_PATH_KEY = "kryptos_emulator.root_path"


def relative_path(request: Request) -> str:
    """The request path below the emulator's mount point (Starlette keeps the full path in `path`)."""
    path: str = request.scope["path"]
    root: str = request.scope.get(ROOT_PATH_KEY, "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path or "/"
