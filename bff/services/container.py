"""The services a handler uses, and what the lifespan opens and closes to build them: the session store,
the provider's HTTP client and the Kryptos API client, the session manager, the token, login and limit services.

One pooled client per remote with explicit timeouts and limits, nothing opened at import time, and
everything closed on shutdown. The provider's metadata is loaded in the background with retries, so the
service starts (and ``/readyz`` says "not ready") while the provider is briefly unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx2

from bff import tracing
from bff.config import Settings
from bff.errors import BffError
from bff.logs import flush_logs
from bff.oidc.budget import ProviderBudget
from bff.oidc.client import OidcClient
from bff.services.connect import ConnectService
from bff.services.devices import Devices
from bff.services.grant_facts import GrantFacts
from bff.services.login import LoginService
from bff.services.ratelimit import RateLimits
from bff.services.tokens import TokenService
from bff.services.upstream import KEEPALIVE_SECONDS, Upstream
from bff.sessions import SessionManager
from bff.sessions.cache import SessionCache
from bff.sessions.connect import ConnectGrants
from bff.sessions.cookie import SignedValueCodec
from bff.sessions.crypto import Keyring
from bff.sessions.handoff import HandoffStore
from bff.sessions.memory_store import MemoryStore
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore

log = logging.getLogger("bff.resources")


@dataclass(frozen=True)
class Services:
    """Everything a handler may use, opened once per process by :func:`open_services`."""

    settings: Settings
    sessions: SessionManager
    session_codec: SignedValueCodec  # the session cookie and the app's session token
    binding_codec: SignedValueCodec  # the login-binding cookie
    oidc: OidcClient
    tokens: TokenService
    login: LoginService
    upstream: Upstream
    handoffs: HandoffStore
    limits: RateLimits  # per client address and per browser (bff.services.ratelimit)
    connect: ConnectService  # the Kryptos Connect widget flow and the grants it leaves (bff.services.connect)
    grant_facts: GrantFacts  # what the administrator's grant list learns (bff.services.grant_facts)
    devices: Devices  # a user's sessions, listed and ended (bff.services.devices)
    connect_codec: SignedValueCodec  # the grant cookie
    client_headers: dict[str, str]  # X-Client-Id and X-Client-Secret, sent on every Kryptos API call

    def __repr__(self) -> str:
        return f"Services(issuer={self.settings.issuer!r})"


def build_store(settings: Settings) -> KeyValueStore:
    """``memory://`` → the in-process store; any other scheme → Redis (one server, Sentinel or Cluster; TLS)."""
    if settings.uses_memory_store:
        return MemoryStore()
    # RedisStore.from_url parses redis(s)://, redis(s)+sentinel:// and redis(s)+cluster:// itself.
    return RedisStore.from_url(
        settings.redis_url.get_secret_value(), ca_file=settings.redis_tls_ca_file, timeout=settings.redis_timeout
    )


async def _sweep_idle_grants_forever(connect: ConnectService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            while await connect.sweep_idle() > 0:
                pass  # a full batch: there may be more
        except BffError as exc:
            log.warning("idle connect grants not swept; next round later", extra={"reason": exc.code})


SESSION_SWEEP_BATCH = 500


async def _sweep_ended_sessions_forever(sessions: SessionManager, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            while await sessions.sweep_ended(limit=SESSION_SWEEP_BATCH) >= SESSION_SWEEP_BATCH:
                pass  # a full batch: there may be more
        except BffError as exc:
            log.warning("ended sessions not swept; next round later", extra={"reason": exc.code})


async def _load_metadata_forever(oidc: OidcClient) -> None:
    delay = 0.5
    while True:
        try:
            await oidc.metadata()
            return
        except BffError as exc:
            log.warning("provider metadata not loaded yet; retrying", extra={"reason": exc.code})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    store: KeyValueStore | None = None,
    clock: Callable[[], float] = time.time,
    idp_transport: httpx2.AsyncBaseTransport | None = None,
) -> AsyncIterator[Services]:
    store = store if store is not None else build_store(settings)
    keyring = Keyring([k.get_secret_value() for k in settings.encryption_keys])
    signing = [k.get_secret_value() for k in settings.session_secrets]
    idp_http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(settings.idp_timeout, connect=min(5.0, settings.idp_timeout)),
        # Idle connections go before servers drop them (see bff.services.upstream.KEEPALIVE_SECONDS).
        limits=httpx2.Limits(max_connections=50, max_keepalive_connections=10, keepalive_expiry=KEEPALIVE_SECONDS),
        follow_redirects=False,
        transport=idp_transport,
    )
    oidc = OidcClient(settings, idp_http, clock=clock, budget=ProviderBudget.from_settings(store, settings, clock))
    cache = (
        SessionCache(ttl=settings.session_cache_seconds)
        if settings.session_cache_seconds > 0 and not isinstance(store, MemoryStore)
        else None
    )
    sessions = SessionManager(store, keyring, lifetimes=Lifetimes.from_settings(settings), clock=clock, cache=cache)
    limits = RateLimits(store, settings, clock=clock)
    upstream = Upstream(settings)
    client_headers = {"X-Client-Id": settings.client_id, "X-Client-Secret": settings.client_secret.get_secret_value()}
    grant_facts = GrantFacts(store)
    connect = ConnectService(
        settings,
        upstream,
        ConnectGrants(store, keyring, clock),
        sessions,
        store,
        client_headers=client_headers,
        facts=grant_facts,
    )
    login = LoginService(settings, sessions, oidc, limits)
    services = Services(
        settings=settings,
        sessions=sessions,
        session_codec=SignedValueCodec(signing, salt="bff.session"),
        binding_codec=SignedValueCodec(signing, salt="bff.login-binding"),
        oidc=oidc,
        tokens=TokenService(sessions, oidc, lock_lease=settings.refresh_lock_lease, wait=settings.refresh_wait),
        login=login,
        upstream=upstream,
        handoffs=HandoffStore(store, keyring, clock),
        limits=limits,
        connect=connect,
        grant_facts=grant_facts,
        devices=Devices(sessions, login, redis_timeout=settings.redis_timeout),
        connect_codec=SignedValueCodec(signing, salt="bff.connect-grant"),
        client_headers=client_headers,
    )
    # One quick attempt at start-up (so a healthy deployment is ready at once), then keep trying in the
    # background: a provider that is briefly down must not crash-loop the pods.
    with contextlib.suppress(BffError, TimeoutError):
        await asyncio.wait_for(oidc.metadata(), timeout=min(3.0, settings.idp_timeout))
    background = [
        asyncio.create_task(_load_metadata_forever(oidc)),
        asyncio.create_task(sessions.follow_changes()),
        # Idle grants are looked for every hour (or a 24th of the idle timeout, when that is shorter).
        asyncio.create_task(_sweep_idle_grants_forever(connect, min(3600.0, settings.connect_idle_timeout / 24))),
    ]
    if settings.session_sweep_interval > 0:  # BFF_SESSION_SWEEP_INTERVAL: how late an unseen end is recorded
        background.append(asyncio.create_task(_sweep_ended_sessions_forever(sessions, settings.session_sweep_interval)))
    # Traces, when the OTEL_* variables ask for them: here, in each worker process's lifespan, so no exporter
    # thread or queue crosses a fork (bff.tracing).
    tracing.start()
    try:
        yield services
    finally:
        for task in background:
            task.cancel()
        # Bounded: a background task stuck on a dead server must not hold up closing everything else.
        await asyncio.wait(background, timeout=3.0)
        flush_logs()  # the batched access lines of the last requests
        await idp_http.aclose()
        await upstream.aclose()
        await store.aclose()
        await tracing.stop()  # exports the last requests' spans (bounded)
