"""The provider's request quota for this client id, spent by every replica together.

Kryptos allows 100 token-endpoint calls a minute and 1,000 userinfo calls an hour per client id
(as Kryptos documents it). Every replica counts its calls in one sliding window per endpoint, kept in the
session store (``BFF_TOKEN_BUDGET_PER_MINUTE``, ``BFF_USERINFO_BUDGET_PER_HOUR``); code exchanges (which
anyone holding a fresh ``state`` can trigger) may fill only ``BFF_CODE_EXCHANGE_SHARE`` of the token
window, so refreshes of signed-in users always have room. A 429 from the provider makes every replica
wait as long as its ``Retry-After`` says. Either way the call is not made: 503 ``idp_busy``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import secrets
from collections.abc import Callable
from typing import Literal

from bff import metrics
from bff.config import Settings
from bff.errors import IdpBusy, retry_after_header
from bff.sessions.store import KeyValueStore, provider_budget_key

log = logging.getLogger("bff.ratelimit")

ProviderCall = Literal["authorization_code", "refresh_token", "userinfo"]

_BACKOFF_DEFAULT = 60.0  # a 429 without a usable Retry-After: wait a token window
_BACKOFF_MAX = 3600.0  # never believe a provider that asks for more than the longest window (userinfo's hour)


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
        clock: Callable[[], float],
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
    def from_settings(cls, store: KeyValueStore, settings: Settings, clock: Callable[[], float]) -> ProviderBudget:
        return cls(
            store,
            provider=f"{settings.issuer} {settings.client_id}",
            token_per_minute=settings.token_budget_per_minute,
            userinfo_per_hour=settings.userinfo_budget_per_hour,
            exchange_share=settings.code_exchange_share,
            clock=clock,
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
