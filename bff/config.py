"""Settings: one typed, frozen object built once from the environment (the README's "Settings").

Only :func:`load_settings` reads the environment. Every secret may also be given as ``<NAME>_FILE`` (a
Kubernetes secret mount); secrets are ``SecretStr`` so they never show in ``repr``, logs or
``bff check-config``. Every problem is collected and reported in one :class:`ConfigError`, never one at a
time (the way oauth2-proxy's ``-config-test`` does it).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

DEFAULT_SCOPES = "openid profile email offline_access integrations:read users:read"
# The 12 scopes every Kryptos client gets by default: what the Connect widget asks for unless told otherwise.
CONNECT_DEFAULT_SCOPES = (
    "openid profile offline_access email portfolios:read transactions:read integrations:read tax:read "
    "accounting:read reports:read workspace:read users:read"
)
DEV_PUBLIC_URL = "http://localhost:8000"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Settings whose value is a secret: accepted as BFF_X or BFF_X_FILE.
_SECRET_FIELDS = ("client_secret", "session_secrets", "encryption_keys", "redis_url")
# Settings that are comma-separated lists in the environment.
_LIST_FIELDS = (
    "scopes",
    "connect_scopes",
    "session_secrets",
    "encryption_keys",
    "admin_subjects",
    "allowed_origins",
    "trusted_proxies",
    "mobile_redirect_uris",
)
_REQUIRED = ("client_id", "client_secret")
_REQUIRED_OUTSIDE_DEV = ("public_url", "redis_url", "session_secrets", "encryption_keys")
_MIN_KEY_LENGTH = 32
_KEY_FIELDS = ("session_secrets", "encryption_keys")
# BFF_* names read by something other than these settings: the emulator and the test command.
_OTHER_VARIABLES = frozenset({"BFF_EMULATOR_CLIENT_SECRET", "BFF_TEST_REDIS_URL"})
# RFC 8252 §7.1: a private-use scheme in reverse-DNS form of a domain the app's publisher controls.
_REVERSE_DNS_SCHEME = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")


class ConfigError(Exception):
    """All problems found in the settings, each one line naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _env_name(field: str) -> str:
    return f"BFF_{field.upper()}"


def _is_loopback_host(host: str | None) -> bool:
    if host in ("localhost", None):
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(value: str, *, allow_path: bool, allow_plain_http: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.scheme == "http" and not (allow_plain_http or _is_loopback_host(parts.hostname)):
        raise ValueError("must use https (plain http is accepted only for loopback hosts or in dev)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a query, fragment or credentials")
    if not allow_path and parts.path not in ("", "/"):
        raise ValueError("must be an origin (scheme://host[:port]) without a path")
    return value.rstrip("/")


def _check_redirect_url(value: str) -> str:
    """Where a browser is sent (post-logout): an absolute http(s) URL, https unless the host is loopback."""
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("must be a URL without spaces or control characters")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.scheme == "http" and not _is_loopback_host(parts.hostname):
        raise ValueError("must use https (plain http is accepted only for loopback hosts)")
    if parts.fragment or parts.username or parts.password:
        raise ValueError("must not carry a fragment or credentials")
    return value


_MAPPED_IPV4 = ipaddress.IPv6Network("::ffff:0:0/96")


def _too_broad(net: IPNetwork) -> bool:
    """Wider than an IPv4 /8 or an IPv6 /32 (IPv4-mapped IPv6 ranges count as the IPv4 range they map)."""
    if isinstance(net, ipaddress.IPv4Network):
        return net.prefixlen < 8
    if net.subnet_of(_MAPPED_IPV4):
        return net.prefixlen - 96 < 8
    return net.prefixlen < 32 or _MAPPED_IPV4.subnet_of(net)


def _check_mobile_redirect_uri(value: str) -> str:
    """An app's claimed redirect: an https universal/app link or a reverse-DNS private-use scheme (RFC 8252 §7)."""
    if not value or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{value!r} must be a URI without spaces or control characters")
    if "#" in value:
        raise ValueError(f"{value!r} must not carry a fragment")
    scheme, colon, _ = value.partition(":")
    if scheme == "https":
        parts = urlsplit(value)
        if not parts.hostname or parts.username or parts.password:
            raise ValueError(f"{value!r} must name a host and carry no credentials")
    elif not colon or not _REVERSE_DNS_SCHEME.fullmatch(scheme):
        raise ValueError(
            f"{value!r} must be an https URL or use a private-use scheme in reverse-DNS form, "
            "e.g. com.example.app:/oauth2redirect"
        )
    return value


class Settings(BaseModel):
    """The service's configuration. Build it with :func:`load_settings` (or directly in tests)."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    dev: bool = False
    issuer: str = "https://oauth.kryptos.io/oidc"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    token_auth_method: Literal["client_secret_post", "client_secret_basic"] = "client_secret_post"  # noqa: S105 - a method name, not a secret
    public_url: str = DEV_PUBLIC_URL
    scopes: tuple[str, ...] = tuple(DEFAULT_SCOPES.split())
    data_api_url: str = "https://connect.kryptos.io/api"
    connect_api_url: str = "https://connect-api.kryptos.io"
    # The Kryptos Connect widget (bff.services.connect): the scopes a link token asks for; how long a grant may go
    # unused before bff revokes it at Kryptos and forgets it (also the lifetime of the browser's grant cookie,
    # which browsers cap at 400 days); how long a /connect/status answer is reused.
    connect_scopes: tuple[str, ...] = tuple(CONNECT_DEFAULT_SCOPES.split())
    connect_idle_timeout: int = Field(400 * 86400, ge=3600)
    connect_status_cache_seconds: float = Field(30.0, ge=0, le=300)
    redis_url: SecretStr = SecretStr("memory://")
    redis_tls_ca_file: str | None = None
    session_secrets: tuple[SecretStr, ...] = ()
    encryption_keys: tuple[SecretStr, ...] = ()
    session_idle_timeout: int = Field(1800, ge=60)
    session_max_lifetime: int = Field(86400, ge=60)
    # Used when the provider does not say (`refresh_expires_in`): the Kryptos docs give 30 days.
    refresh_token_lifetime: int = Field(30 * 86400, ge=60)
    admin_subjects: frozenset[str] = frozenset()
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # Native apps' claimed redirect URIs, matched exactly (RFC 8252 §8.10); empty turns mobile sign-in off.
    mobile_redirect_uris: tuple[str, ...] = ()
    metrics_port: int = Field(9464, ge=0, le=65535)
    # A second port `bff serve` listens on for /auth/verify alone (bff.routes.verify); 0 serves it on the main
    # port. Set, the main port answers /auth/verify with 404, so an ingress route that relays a browser's
    # request to bff can never reach it.
    verify_port: int = Field(0, ge=0, le=65535)
    # Bounds on a request's head, before any work (bff.web.edge; for `bff serve` also bff.web.protocol, before
    # the bytes are even buffered): more headers, more bytes or a bigger Cookie header answer 431; a connection
    # that has not sent a whole request head within header_timeout seconds is closed (slowloris).
    max_request_headers: int = Field(100, ge=16, le=1000)
    max_header_bytes: int = Field(16384, ge=4096, le=65536)
    max_cookie_bytes: int = Field(8192, ge=1024, le=65536)
    header_timeout: float = Field(10.0, gt=0, le=120)
    cookie_name: str | None = None
    cookie_samesite: Literal["lax", "strict"] = "lax"
    post_logout_redirect_uri: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    audit_log: Literal["stderr", "stdout"] = "stderr"  # where the audit trail's lines go (bff.audit)
    # How often a replica looks for sessions Redis expired on their own, to record them and drop their index
    # entries (SessionManager.sweep_ended); 0 turns the sweep off (listing a user's sessions still does it).
    session_sweep_interval: float = Field(30.0, ge=0, le=3600)
    # The per-session refresh lock (held across replicas): its lease, renewed while the token call runs,
    # and how long other requests wait for it before answering 503 refresh_in_progress.
    refresh_lock_lease: float = Field(5.0, gt=0)
    # How long a process may keep a session it read from Redis (dropped at once when it changes anywhere);
    # 0 reads Redis on every request. Not used with memory://.
    # Capped: a process that missed a change (its feed died unnoticed) serves a stale copy no longer than this.
    session_cache_seconds: float = Field(10.0, ge=0, le=60)
    # All the Redis work of one request together gets at most this long (a frozen Redis costs a request
    # this, not every call's socket timeout in turn); also each call's own timeout.
    redis_timeout: float = Field(2.0, gt=0, le=30)
    refresh_wait: float = Field(12.0, gt=0)
    idp_timeout: float = Field(10.0, gt=0)
    upstream_timeout: float = Field(30.0, gt=0)
    # Abuse limits (bff.services.ratelimit). Requests per client address per minute, bursts of up to the same number,
    # on the anonymous endpoints that write to Redis or call the provider; 0 turns one off.
    rate_limit_login: int = Field(30, ge=0)
    rate_limit_callback: int = Field(30, ge=0)
    rate_limit_mobile_token: int = Field(30, ge=0)
    rate_limit_backchannel: int = Field(300, ge=0)
    rate_limit_connect: int = Field(30, ge=0)  # /connect/link-token and /connect/exchange together
    # The same two, all addresses and replicas together: what a flood from many addresses may cost Kryptos.
    connect_budget_per_minute: int = Field(600, ge=0)
    # Sign-ins one browser (its login-binding cookie) may have pending at once.
    pending_logins_per_browser: int = Field(10, ge=2)
    # The provider's quota per client id, shared by every replica (Kryptos: 100 token-endpoint calls a
    # minute, 1,000 userinfo calls an hour); code exchanges may use only their share of the token budget,
    # so refreshes always have room. 0 turns a budget off.
    token_budget_per_minute: int = Field(100, ge=0)
    userinfo_budget_per_hour: int = Field(1000, ge=0)
    code_exchange_share: float = Field(0.7, gt=0, le=1)

    @field_validator("issuer", "data_api_url", "connect_api_url")
    @classmethod
    def _url_with_path(cls, value: str, info: Any) -> str:
        return _check_url(value, allow_path=True, allow_plain_http=bool(info.data.get("dev")))

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str, info: Any) -> str:
        return _check_url(value, allow_path=False, allow_plain_http=bool(info.data.get("dev")))

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...], info: Any) -> tuple[str, ...]:
        # Plain http only for loopback origins, or in dev: a foreign http origin could be anyone on the path.
        return tuple(_check_url(v, allow_path=False, allow_plain_http=bool(info.data.get("dev"))) for v in value)

    @field_validator("post_logout_redirect_uri")
    @classmethod
    def _post_logout_redirect_uri(cls, value: str | None) -> str | None:
        return None if value is None else _check_redirect_url(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: tuple[IPNetwork, ...]) -> tuple[IPNetwork, ...]:
        for net in value:
            if _too_broad(net):
                raise ValueError(
                    f"{net} is far too broad: X-Forwarded-For would be believed from almost anyone. List the "
                    "proxies' own addresses or subnets (an IPv4 /8 or an IPv6 /32 at the widest)"
                )
        return value

    @field_validator("mobile_redirect_uris")
    @classmethod
    def _mobile_redirect_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_mobile_redirect_uri(v) for v in value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "openid" not in value:
            raise ValueError("must include 'openid'")
        return value

    @field_validator("connect_scopes")
    @classmethod
    def _connect_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or not all(s.isascii() and s.isprintable() and '"' not in s and "\\" not in s for s in value):
            raise ValueError("must be space-separated scope names")
        return value

    @field_validator("session_secrets", "encryption_keys")
    @classmethod
    def _keys(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, key in enumerate(value, 1):
            if len(key.get_secret_value()) < _MIN_KEY_LENGTH:
                raise ValueError(f"key #{i} is shorter than {_MIN_KEY_LENGTH} characters")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().split("://", 1)[0]
        allowed = (
            "memory",
            "redis",
            "rediss",
            "redis+sentinel",
            "rediss+sentinel",
            "redis+cluster",
            "rediss+cluster",
        )
        if "://" not in value.get_secret_value() or scheme not in allowed:
            raise ValueError(f"scheme must be one of {', '.join(s + '://' for s in allowed)}")
        return value

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or not all(c.isalnum() or c in "-_." for c in value)):
            raise ValueError("must be a non-empty token of letters, digits, '-', '_' or '.'")
        return value

    # Derived values: computed from the settings, never configured twice.

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/auth/callback"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def session_cookie_name(self) -> str:
        if self.cookie_name:
            return self.cookie_name
        # RFC 6265bis __Host- prefix: Secure, Path=/, no Domain. Plain-http dev cannot use it.
        return "__Host-bff-session" if self.secure_cookies else "bff-session"

    @property
    def login_cookie_name(self) -> str:
        return "__Host-bff-login" if self.secure_cookies else "bff-login"

    @property
    def connect_cookie_name(self) -> str:
        """The browser's handle on its Kryptos Connect grant (bff.routes.connect), apart from the session's."""
        return "__Host-bff-connect" if self.secure_cookies else "bff-connect"

    @property
    def effective_allowed_origins(self) -> frozenset[str]:
        return frozenset(self.allowed_origins or (self.public_url,))

    @property
    def effective_post_logout_redirect_uri(self) -> str:
        return self.post_logout_redirect_uri or f"{self.public_url}/"

    @property
    def uses_memory_store(self) -> bool:
        return self.redis_url.get_secret_value().startswith("memory://")


def _read_secret_file(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip()


def load_settings(environ: Mapping[str, str] | None = None, *, dev: bool = False) -> Settings:
    """Parse ``BFF_*`` variables into :class:`Settings`, raising :class:`ConfigError` with every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {"dev": dev}
    for name in Settings.model_fields:
        if name == "dev":
            continue
        var = _env_name(name)
        value = env.get(var)
        file_var = f"{var}_FILE"
        if name in _SECRET_FIELDS and env.get(file_var):
            if value:
                problems.append(f"{var} and {file_var} are both set; set only one")
                continue
            try:
                value = _read_secret_file(env[file_var])
            except OSError as exc:
                problems.append(f"{file_var}: cannot read the file ({exc.strerror})")
                continue
        if value is None or value.strip() == "":
            continue
        value = value.strip()
        if name in _LIST_FIELDS:
            sep = None if name in ("scopes", "connect_scopes") else ","
            raw[name] = [v.strip() for v in value.split(sep) if v.strip()]
            if not raw[name] and name in _KEY_FIELDS:
                problems.append(f"{var}: holds no key; give at least one (comma-separated, newest first)")
        else:
            raw[name] = value
    if dev:
        # The demo needs no secrets from the person running it: fresh random keys each run.
        raw.setdefault("session_secrets", [secrets.token_urlsafe(32)])
        raw.setdefault("encryption_keys", [secrets.token_urlsafe(32)])
    required = _REQUIRED + (() if dev else _REQUIRED_OUTSIDE_DEV)
    for name in required:
        if name not in raw:
            hint = f" (or {_env_name(name)}_FILE)" if name in _SECRET_FIELDS else ""
            problems.append(f"{_env_name(name)}{hint} is required")
    if "trusted_proxies" in raw:
        nets: list[IPNetwork] = []
        for item in raw["trusted_proxies"]:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                problems.append(f"BFF_TRUSTED_PROXIES: {item!r} is not an IP address or CIDR")
        raw["trusted_proxies"] = nets
    if "cookie_samesite" in raw:
        raw["cookie_samesite"] = raw["cookie_samesite"].lower()
    try:
        settings = Settings.model_validate({k: v for k, v in raw.items() if k not in _missing(problems)})
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "settings"
            if field in required and field not in raw:
                continue  # already reported as missing
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_env_name(field)}: {message}")
        raise ConfigError(problems) from None
    if settings.session_max_lifetime < settings.session_idle_timeout:
        problems.append("BFF_SESSION_MAX_LIFETIME must not be shorter than BFF_SESSION_IDLE_TIMEOUT")
    if settings.verify_port and settings.verify_port == settings.metrics_port:
        problems.append("BFF_VERIFY_PORT must differ from BFF_METRICS_PORT")
    if problems:
        raise ConfigError(problems)
    return settings


def _missing(problems: list[str]) -> set[str]:
    # Fields whose raw value was unusable (already reported); validating them again would double-report.
    return {"trusted_proxies"} if any(p.startswith("BFF_TRUSTED_PROXIES") for p in problems) else set()


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``BFF_*`` variables that no setting reads (a typo such as ``BFF_REDIS_UR`` would otherwise pass
    silently), each with the closest known name when there is one. Names only: values are never read."""
    env = os.environ if environ is None else environ
    known = {_env_name(name) for name in Settings.model_fields if name != "dev"}
    known |= {f"{_env_name(name)}_FILE" for name in _SECRET_FIELDS}
    known |= _OTHER_VARIABLES
    found = []
    for name in sorted(n for n in env if n.startswith("BFF_") and n not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        found.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return found
