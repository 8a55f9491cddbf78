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

Each refusal is also a ``rate_limited`` event of the audit trail (:mod:`bff.audit`), but a flood must not
become a flood of audit lines: :class:`RefusalTrail` records the first refusal of each limit and address per
minute in a process (the next one says how many it folded in), and at most :data:`TRAIL_PER_MINUTE` a minute
in all, then one line for the rest.

The provider's quota, shared the same way, is :class:`bff.oidc.budget.ProviderBudget`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

from bff import audit, metrics
from bff.config import Settings
from bff.errors import RateLimited, ServiceUnavailable, retry_after_header
from bff.sessions.manager import LOGIN_STATE_TTL
from bff.sessions.store import KeyValueStore, pending_logins_key, rate_limit_key

Endpoint = Literal["login", "callback", "mobile_token", "backchannel_logout", "connect"]
Limit = Literal["address", "browser", "deployment"]
TRAIL_WINDOW = 60.0  # seconds: one audit line per limit and address in this long, per process
TRAIL_PER_MINUTE = 100  # audit lines about refusals per window and process, all addresses together


class RefusalTrail:
    """Which refusals become ``rate_limited`` audit events: the first per (endpoint, limit, address) and
    window, at most :data:`TRAIL_PER_MINUTE` per window in all; the refusals folded into one are counted in
    ``suppressed`` of the next event of the same kind, and those over the cap in one summary event."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._window_start = clock()
        self._seen: dict[tuple[str, str, str], int] = {}  # recorded this window → refusals folded since
        self._carried: dict[tuple[str, str, str], int] = {}  # folded in the last window, not told yet
        self._over_cap = 0  # refusals this window not recorded because of the cap

    def refused(self, endpoint: Endpoint, limit: Limit, address: str) -> None:
        now = self._clock()
        if now - self._window_start >= TRAIL_WINDOW:
            self._next_window(now)
        key = (endpoint, limit, address)
        if key in self._seen:
            self._seen[key] += 1
            return
        if len(self._seen) >= TRAIL_PER_MINUTE:
            self._over_cap += 1
            return
        self._seen[key] = 0
        audit.record(
            "rate_limited",
            outcome="denied",
            target={"endpoint": endpoint, "limit": limit},
            suppressed=self._carried.pop(key, 0),
        )

    def _next_window(self, now: float) -> None:
        if self._over_cap:  # not about this request: no client, no request id
            audit.record(
                "rate_limited",
                outcome="denied",
                target={"endpoint": "*", "limit": "*"},
                suppressed=self._over_cap,
                in_request=False,
            )
        self._carried = {key: n for key, n in self._seen.items() if n}  # at most TRAIL_PER_MINUTE
        self._seen, self._over_cap, self._window_start = {}, 0, now


class RateLimits:
    """The per-client-address buckets and the per-browser cap on pending sign-ins."""

    def __init__(self, store: KeyValueStore, settings: Settings, *, clock: Callable[[], float]) -> None:
        self._store = store
        self.trail = RefusalTrail(clock)
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
            self.trail.refused(endpoint, "address", address)
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
            self.trail.refused("connect", "deployment", "")
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
            self.trail.refused("login", "browser", binding_hash)
            raise RateLimited(
                "This browser has too many sign-ins in progress; finish one or try again later.",
                headers=retry_after_header(wait),
            )

    async def finish_login(self, binding_hash: str, state: str) -> None:
        """The sign-in reached the callback (its state is consumed): it is no longer pending."""
        await self._store.window_remove(pending_logins_key(binding_hash), _member(state))


def _member(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:16]
