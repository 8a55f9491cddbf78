"""``create_app(settings)``: every route, the middleware and the lifespan, in one place.

One middleware, :class:`bff.web.edge.EdgeMiddleware` (forwarded headers, request id, security headers, access
log and metrics, path guard, CSRF, the Redis budget), then the router. The hot path skips the router: the
edge calls the routes :func:`direct_routes` lists itself, by method and exact path. The forwarded API routes
also come first in the route list, since Starlette tries routes in order.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import httpx2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.config import Settings
from bff.errors import BffError, MethodNotAllowed, NotFound, error_response
from bff.proxy.forwarder import proxy_routes
from bff.proxy.routes import ROUTES
from bff.routes import auth, backchannel, connect, health, mobile, sessions, verify
from bff.services.container import open_services
from bff.sessions.store import KeyValueStore
from bff.web.edge import EdgeMiddleware

log = logging.getLogger("bff.app")


def routes() -> list[BaseRoute]:
    """Every endpoint of the service (the README's "HTTP endpoints")."""
    return [
        *proxy_routes(),  # /api/...: the route table, bff.proxy.routes
        Route("/auth/login", auth.login, methods=["GET"]),
        Route("/auth/callback", auth.callback, methods=["GET"]),
        Route("/auth/session", auth.session_info, methods=["GET"]),
        Route("/auth/logout", auth.logout_post, methods=["POST"]),
        Route("/auth/logout", auth.logout_get, methods=["GET"]),
        Route("/auth/sessions", sessions.list_own, methods=["GET"]),
        Route("/auth/sessions/end-others", sessions.end_others, methods=["POST"]),
        Route("/auth/sessions/{handle}", sessions.end_own, methods=["DELETE"]),
        Route("/auth/mobile/token", mobile.token, methods=["POST"]),
        Route("/auth/backchannel-logout", backchannel.backchannel_logout, methods=["POST"]),
        Route(verify.PREFIX, verify.verify, methods=verify.METHODS),  # the ingress's external authorization
        Route(verify.PREFIX + "/{original:path}", verify.verify, methods=verify.METHODS),  # Envoy's path_prefix
        Route("/connect/link-token", connect.link_token, methods=["POST"]),
        Route("/connect/exchange", connect.exchange, methods=["POST"]),
        Route("/connect/status", connect.status, methods=["GET"]),
        Route("/connect/disconnect", connect.disconnect, methods=["POST"]),
        Route("/api/developer/grants/{grantId}/revoke", connect.revoke_grant, methods=["POST"]),
        Route("/api/admin/users/{sub}/sessions", sessions.admin_list, methods=["GET"]),
        Route("/api/admin/users/{sub}/sessions", sessions.admin_end_all, methods=["DELETE"]),
        Route("/api/admin/users/{sub}/sessions/{handle}", sessions.admin_end_one, methods=["DELETE"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
    ]


def direct_routes(table: Sequence[BaseRoute]) -> dict[tuple[str, str], Route]:
    """(method, path) → route, for the routes the edge calls without the router: the forwarded API calls
    without path parameters and ``/auth/verify``, each a plain ASGI endpoint (so no per-route wrapper is
    skipped). Any method a route lacks goes through the router, which answers 405."""
    hot = {*(r.path for r in ROUTES if "{" not in r.path), verify.PREFIX}
    return {
        (method, route.path): route
        for route in table
        if isinstance(route, Route) and route.path in hot
        for method in route.methods or ()
    }


async def _bff_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BffError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's router: no route (404) or not this method (405). Nothing else raises HTTPException here.
    assert isinstance(exc, HTTPException)
    error = MethodNotAllowed if exc.status_code == 405 else NotFound
    return error_response(error(headers=exc.headers))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The client learns only that something failed; the log keeps the exception type (never its text).
    log.error("unhandled error", exc_info=exc)
    return error_response(BffError("Something went wrong on our side."))


def create_app(
    settings: Settings,
    *,
    store: KeyValueStore | None = None,
    clock: Callable[[], float] = time.time,
    idp_transport: httpx2.AsyncBaseTransport | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The service.

    ``clock`` is its one clock: every "what time is it" behind a decision (session idle and absolute ends,
    token refresh points, login-state and hand-off ages, the provider budget's back-off, logout-token
    ``iat``, JWKS refetch windows) reads it. Only the deadlines of real waits (lock polling, the Redis
    budget, the change feed's liveness) use the event loop's monotonic time, because they bound real
    sleeps; latencies for metrics use ``perf_counter``; log lines carry the wall-clock time.
    ``store`` and ``idp_transport`` replace the Redis store and the provider's transport (tests);
    ``extra_routes`` come after the service's own (``bff dev`` mounts the emulator and the demo SPA)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, store=store, clock=clock, idp_transport=idp_transport) as services:
            app.state.services = services
            # Everything built at start-up lives as long as the process: move it out of the collector's
            # way, so collections triggered by per-request garbage do not rescan it each time.
            gc.collect()
            gc.freeze()
            yield

    table = [*routes(), *extra_routes]
    app = Starlette(
        routes=table,
        middleware=[Middleware(EdgeMiddleware, settings=settings, direct=direct_routes(table))],
        exception_handlers={BffError: _bff_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    # No trailing-slash redirects: Starlette builds their Location from the request's Host header, so
    # `GET /auth/login/` with `Host: evil.example` would answer with a redirect there. Unknown paths are 404.
    app.router.redirect_slashes = False
    return app
