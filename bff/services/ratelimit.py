"""Abuse limits: what one client address and one browser may cost, for every replica together.

Each is shared by all replicas through the store (one small script on one key in Redis; in-process for
``memory://``), and each refusal names when to come back (``Retry-After``, whole seconds):

* **Per client address** (:class:`RateLimits`): the anonymous endpoints that write to Redis or call the
  provider (``/auth/login`` for browsers and apps, ``/auth/callback``, ``/auth/mobile/token``,
  ``/auth/backchannel-logout``, and ``/connect/link-token`` with ``/connect/exchange`` as one) each admit
  ``BFF_RATE_LIMIT_<ENDPOINT>`` requests per minute from one address, in bursts of up to the same number (a
  GCRA bucket, timed by Redis's clock). The check is the first thing each handler does, so a refused request
  (429 ``rate_limited``) writes nothing but its bucket and calls no provider. The address is the one
  :mod:`bff.web.forwarded` resolved (``BFF_TRUSTED_PROXIES``); IPv6 clients count per /64, the smallest block
  one subscriber is usually given. Key names hash the address together with the deployment's public URL, so
  deployments sharing a Redis keep apart.
* **Per browser**: at most ``BFF_PENDING_LOGINS_PER_BROWSER`` sign-ins pending for one login-binding cookie
  (a sliding window as long as a login state lives; a sign-in that reaches the callback leaves it).

The provider's quota, shared the same way, is :class:`bff.oidc.budget.ProviderBudget`.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from bff import metrics
from bff.config import Settings
from bff.errors import RateLimited, ServiceUnavailable, retry_after_header
from bff.sessions.manager import LOGIN_STATE_TTL
from bff.sessions.store import KeyValueStore, pending_logins_key, rate_limit_key

Endpoint = Literal["login", "callback", "mobile_token", "backchannel_logout", "connect"]


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
            "connect": settings.rate_limit_connect,
        }
        self._pending = settings.pending_logins_per_browser
        self._connect_budget = settings.connect_budget_per_minute

    def __repr__(self) -> str:
        return f"RateLimits({self._per_minute})"

    async def check(self, address: str, endpoint: Endpoint) -> None:
        """Count a request from ``address`` (:func:`bff.web.request.client_address`) against its bucket,
        or raise 429 ``rate_limited``."""
        per_minute = self._per_minute[endpoint]
        if per_minute <= 0:
            return
        key = rate_limit_key(endpoint, f"{self._namespace} {address}")
        wait = await self._store.rate_limit(key, interval=60.0 / per_minute, burst=per_minute)
        if wait > 0:
            metrics.rate_limited.labels(endpoint=endpoint, limit="address").inc()
            raise RateLimited("Too many requests from this address; try again later.", headers=retry_after_header(wait))

    async def spend_connect_budget(self) -> None:
        """Count one Connect API call made for an anonymous-capable endpoint (link token, exchange) against the
        deployment's budget (``BFF_CONNECT_BUDGET_PER_MINUTE``, every address and replica together), or raise
        503 ``connect_busy``: a flood from many addresses, each under its own limit, still costs Kryptos no
        more than this."""
        if self._connect_budget <= 0:
            return
        key = rate_limit_key("connect_budget", f"{self._namespace} deployment")
        wait = await self._store.rate_limit(key, interval=60.0 / self._connect_budget, burst=self._connect_budget)
        if wait > 0:
            metrics.rate_limited.labels(endpoint="connect", limit="deployment").inc()
            raise ServiceUnavailable(
                "Too many Kryptos Connect requests right now; try again shortly.",
                code="connect_busy",
                headers=retry_after_header(wait),
            )

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
