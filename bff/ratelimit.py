"""Abuse limits: what one client address, one browser, and every replica together may cost.

Each is shared by all replicas through the store (one small script on one key in Redis; in-process for
``memory://``), and each refusal names when to come back (``Retry-After``, whole seconds):

* **Per client address** (:class:`RateLimits`): the anonymous endpoints that write to Redis or call the
  provider (``/auth/login`` for browsers and apps, ``/auth/callback``, ``/auth/mobile/token``,
  ``/auth/backchannel-logout``) each admit ``BFF_RATE_LIMIT_<ENDPOINT>`` requests per minute from one
  address, in bursts of up to the same number (a GCRA bucket, timed by Redis's clock). The check is the
  first thing each handler does, so a refused request (429 ``rate_limited``) writes nothing but its bucket
  and calls no provider. The address is the one :mod:`bff.forwarded` resolved (``BFF_TRUSTED_PROXIES``);
  IPv6 clients count per /64, the smallest block one subscriber is usually given. Key names hash the
  address together with the deployment's public URL, so deployments sharing a Redis keep apart.
* **Per browser**: at most ``BFF_PENDING_LOGINS_PER_BROWSER`` sign-ins pending for one login-binding cookie
  (a sliding window as long as a login state lives; a sign-in that reaches the callback leaves it).
* **The provider's quota** (:class:`ProviderBudget`): Kryptos allows 100 token-endpoint calls a minute and
  1,000 userinfo calls an hour per client id. Every replica counts its calls in one sliding window per
  endpoint (``BFF_TOKEN_BUDGET_PER_MINUTE``, ``BFF_USERINFO_BUDGET_PER_HOUR``); code exchanges (which
  anyone holding a fresh ``state`` can trigger) may fill only ``BFF_CODE_EXCHANGE_SHARE`` of the token
  window, so refreshes of signed-in users always have room. A 429 from the provider makes every replica
  wait as long as its ``Retry-After`` says. Either way the call is not made: 503 ``idp_busy``.
"""

from __future__ import annotations

import email.utils
import hashlib
import ipaddress
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Literal

from starlette.requests import Request

from bff import metrics
from bff.config import Settings
from bff.errors import IdpBusy, RateLimited
from bff.sessions.manager import LOGIN_STATE_TTL
from bff.sessions.store import KeyValueStore, pending_logins_key, provider_budget_key, rate_limit_key

log = logging.getLogger("bff.ratelimit")

Endpoint = Literal["login", "callback", "mobile_token", "backchannel_logout"]
ProviderCall = Literal["authorization_code", "refresh_token", "userinfo"]

_BACKOFF_DEFAULT = 60.0  # a 429 without a usable Retry-After: wait a token window
_BACKOFF_MAX = 3600.0  # never believe a provider that asks for more than the longest window (userinfo's hour)


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def client_address(request: Request) -> str:
    """Who a request counts against: its (proxy-resolved) address; an IPv6 client's /64."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RateLimits:
    """The per-client-address buckets and the per-browser cap on pending sign-ins."""

    def __init__(self, store: KeyValueStore, settings: Settings) -> None:
        self._store = store
        self._namespace = settings.public_url
        self._per_minute: dict[Endpoint, int] = {
            "login": settings.rate_limit_login,
            "callback": settings.rate_limit_callback,
            "mobile_token": settings.rate_limit_mobile_token,
            "backchannel_logout": settings.rate_limit_backchannel,
        }
        self._pending = settings.pending_logins_per_browser

    def __repr__(self) -> str:
        return f"RateLimits({self._per_minute})"

    async def check(self, request: Request, endpoint: Endpoint) -> None:
        """Count this request against its address's bucket, or raise 429 ``rate_limited``."""
        per_minute = self._per_minute[endpoint]
        if per_minute <= 0:
            return
        key = rate_limit_key(endpoint, f"{self._namespace} {client_address(request)}")
        wait = await self._store.rate_limit(key, interval=60.0 / per_minute, burst=per_minute)
        if wait > 0:
            metrics.rate_limited.labels(endpoint=endpoint, limit="address").inc()
            raise RateLimited("Too many requests from this address; try again later.", headers=retry_after_header(wait))

    async def start_login(self, binding_hash: str, state: str, *, new_binding: bool) -> None:
        """Count a sign-in pending for this browser, or raise 429 ``rate_limited`` when it has too many.

        A browser's first sign-in (a binding just made) is not written down: nothing else can be pending
        for a binding nobody has seen, and a flood that never returns the cookie then costs no extra key.
        Later ones are, against one less than the cap, so the unrecorded first one still counts.
        """
        if new_binding:
            return
        wait = await self._store.window_add(
            pending_logins_key(binding_hash), _member(state), limit=self._pending - 1, window=LOGIN_STATE_TTL
        )
        if wait > 0:
            metrics.rate_limited.labels(endpoint="login", limit="browser").inc()
            raise RateLimited(
                "This browser has too many sign-ins in progress; finish one or try again later.",
                headers=retry_after_header(wait),
            )

    async def finish_login(self, binding_hash: str, state: str) -> None:
        """The sign-in reached the callback (its state is consumed): it is no longer pending."""
        await self._store.window_remove(pending_logins_key(binding_hash), _member(state))


def _member(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:16]


def parse_retry_after(value: str | None, *, now: float) -> float:
    """Seconds from a ``Retry-After`` value (delay-seconds or an HTTP-date), bounded; a default when unusable."""
    seconds = _BACKOFF_DEFAULT
    if value:
        value = value.strip()
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
            except (TypeError, ValueError, IndexError):
                seconds = _BACKOFF_DEFAULT
    return min(max(seconds, 1.0), _BACKOFF_MAX)


class ProviderBudget:
    """The provider's request quota for this client id, spent by every replica together."""

    def __init__(
        self,
        store: KeyValueStore,
        *,
        provider: str,
        token_per_minute: int,
        userinfo_per_hour: int,
        exchange_share: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._provider = provider  # issuer and client id: the quota's owner
        self._token_limit = token_per_minute
        # Code exchanges fill at most their share of the token window (at least one call, or nobody could
        # sign in); refreshes may use all of it.
        self._exchange_limit = max(1, math.floor(token_per_minute * exchange_share + 1e-9)) if token_per_minute else 0
        self._userinfo_limit = userinfo_per_hour
        self._clock = clock

    @classmethod
    def from_settings(cls, store: KeyValueStore, settings: Settings) -> ProviderBudget:
        return cls(
            store,
            provider=f"{settings.issuer} {settings.client_id}",
            token_per_minute=settings.token_budget_per_minute,
            userinfo_per_hour=settings.userinfo_budget_per_hour,
            exchange_share=settings.code_exchange_share,
        )

    def __repr__(self) -> str:
        return (
            f"ProviderBudget(token={self._token_limit}/min, exchanges={self._exchange_limit}/min, "
            f"userinfo={self._userinfo_limit}/h)"
        )

    async def spend(self, call: ProviderCall) -> None:
        """Count one call about to be made, or raise 503 ``idp_busy`` (and the call must not be made)."""
        endpoint = "userinfo" if call == "userinfo" else "token"
        blob = await self._store.get(provider_budget_key(self._provider, f"{endpoint}-backoff"))
        if blob is not None:
            try:
                remaining = float(blob) - self._clock()
            except ValueError:
                remaining = _BACKOFF_DEFAULT
            if remaining > 0:
                metrics.idp_busy.labels(call=call, reason="backoff").inc()
                raise self._busy(remaining)
        if endpoint == "token":
            limit = self._exchange_limit if call == "authorization_code" else self._token_limit
            window = 60.0
        else:
            limit, window = self._userinfo_limit, 3600.0
        if limit <= 0:
            return
        wait = await self._store.window_add(
            provider_budget_key(self._provider, endpoint), secrets.token_urlsafe(6), limit=limit, window=window
        )
        if wait > 0:
            metrics.idp_busy.labels(call=call, reason="budget").inc()
            log.warning("provider budget spent; call not made", extra={"outcome": call})
            raise self._busy(wait)

    async def provider_said_wait(self, call: ProviderCall, retry_after: str | None) -> IdpBusy:
        """The provider answered 429: no replica calls that endpoint again before its ``Retry-After``."""
        now = self._clock()
        seconds = parse_retry_after(retry_after, now=now)
        endpoint = "userinfo" if call == "userinfo" else "token"
        await self._store.set(
            provider_budget_key(self._provider, f"{endpoint}-backoff"), repr(now + seconds).encode(), ttl=seconds
        )
        metrics.idp_rate_limited.labels(call=call).inc()
        log.warning("the provider is rate limiting us; every replica waits", extra={"outcome": call})
        return self._busy(seconds)

    @staticmethod
    def _busy(seconds: float) -> IdpBusy:
        return IdpBusy(
            "The identity provider's request quota for this service is used up; try again shortly.",
            headers=retry_after_header(seconds),
        )
