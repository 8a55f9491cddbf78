"""``create_app(settings)``: routes, middleware order and lifespan; nothing else.

One middleware, :class:`bff.edge.EdgeMiddleware` (forwarded headers, request id, security headers, access
log and metrics, path guard, CSRF), then the router. The forwarded API routes come first in the route list:
they are the hot path, and Starlette tries routes in order.
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

from bff import auth_routes, backchannel
from bff.config import Settings
from bff.edge import EdgeMiddleware
from bff.errors import BffError, error_response, problem
from bff.observability import healthz, readyz
from bff.proxy.forwarder import proxy_routes
from bff.resources import open_services
from bff.sessions.store import KeyValueStore

log = logging.getLogger("bff.app")


async def _bff_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BffError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # The client learns only that something failed; the log keeps the exception type (never its text).
    log.error("unhandled error", exc_info=exc)
    return problem(500, "internal_error", "Something went wrong on our side.")


def create_app(
    settings: Settings,
    *,
    store: KeyValueStore | None = None,
    clock: Callable[[], float] = time.time,
    idp_transport: httpx2.AsyncBaseTransport | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, store=store, clock=clock, idp_transport=idp_transport) as services:
            app.state.services = services
            # Everything built at start-up lives as long as the process: move it out of the collector's
            # way, so collections triggered by per-request garbage do not rescan it each time.
            gc.collect()
            gc.freeze()
            yield

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *proxy_routes(),
        *auth_routes.routes,
        *backchannel.routes,
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EdgeMiddleware, settings=settings)],
        exception_handlers={BffError: _bff_error, HTTPException: _http_error, Exception: _unexpected},
        lifespan=lifespan,
    )
    # No trailing-slash redirects: Starlette builds their Location from the request's Host header, so
    # `GET /auth/login/` with `Host: evil.example` would answer with a redirect there. Unknown paths are 404.
    app.router.redirect_slashes = False
    return app
