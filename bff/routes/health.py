"""``GET /healthz`` (liveness: the process answers) and ``GET /readyz`` (Redis answers, provider metadata loaded)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.errors import BffError, NotReady
from bff.web.request import services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


_READY_PING_TIMEOUT = 0.8


async def readyz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        # Readiness answers within a second whatever Redis does (a frozen one would hold the probe).
        async with asyncio.timeout(_READY_PING_TIMEOUT):
            await svc.sessions.ping()
        checks["session_store"] = "ok"
    except (BffError, TimeoutError):
        checks["session_store"] = "unavailable"
    checks["identity_provider"] = "ok" if svc.oidc.metadata_loaded else "metadata not loaded"
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        failing = ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
        raise NotReady(f"Not ready: {failing}", extra={"checks": checks})
    return JSONResponse({"status": "ready", "checks": checks})
