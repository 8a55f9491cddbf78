"""The previous (G1) Kryptos data API under `/api`: health, `GET /v1/integrations`, `GET /v1/userinfo`,
and the resync twin `POST /v1/integrations/{id}/resync` with its job, `GET /v1/sync/{job_id}`.

Every call needs a bearer token from this emulator, either an active OIDC access token or the `cat_` token
of a live Connect grant (both are accepted on the same endpoints), plus the `X-Client-Id` and
`X-Client-Secret` of the client the token was issued to (the G1 contract). Error bodies are
`{error, message, details}` (G1 error reference). Injected faults (`POST /_emulator/config`
`data_api_failure`) apply before authentication, as a gateway or rate limiter in front of the real API would.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff_dev.emulator import syncs
from bff_dev.emulator.integrations import matches, render_integrations
from bff_dev.emulator.state import Caller, EmulatorState

VERSION = "1.0.0-emulator"

_FAULT_BODIES = {
    401: ("unauthorized", "Invalid or missing authentication token"),
    403: ("forbidden", "Insufficient scopes. Required scopes not met"),
    404: ("not_found", "Resource not found"),
    429: ("rate_limit_exceeded", "Too many requests, please try again later"),
    500: ("internal_server_error", "Internal server error"),
}


def _error(status: int, error: str, message: str, details: list[Any] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, "details": details or []}, status_code=status)


def _unauthorized() -> JSONResponse:
    return _error(401, *_FAULT_BODIES[401])


def _begin(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    state.record_request(request)
    state.count("data_api")
    return state


async def _injected_fault(state: EmulatorState) -> Response | None:
    fault = state.settings.data_api_failure
    if fault is None:
        return None
    if fault.remaining is not None:
        fault.remaining -= 1
        if fault.remaining <= 0:
            state.settings.data_api_failure = None
    if fault.delay_seconds:
        await asyncio.sleep(fault.delay_seconds)
    if fault.status is None:
        return None
    error, message = _FAULT_BODIES.get(fault.status, ("service_unavailable", "Service temporarily unavailable"))
    response = _error(fault.status, error, message)
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    return response


def _not_found(message: str) -> JSONResponse:
    return _error(404, "not_found", message)


async def _caller(request: Request, scope: str) -> tuple[EmulatorState, Caller] | Response:
    """Every data call's start: logged and counted, an injected fault played first (as a gateway in front of
    the API would), then the token, the client headers and ``scope`` checked."""
    state = _begin(request)
    fault = await _injected_fault(state)
    if fault is not None:
        return fault
    caller = _authenticate(state, request, scope)
    return caller if isinstance(caller, Response) else (state, caller)


def _authenticate(state: EmulatorState, request: Request, scope: str) -> Caller | Response:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    caller = state.data_caller(value.strip()) if scheme.lower() == "bearer" else None
    if caller is None:
        return _unauthorized()
    client = state.clients.get(request.headers.get("x-client-id", ""))
    secret = request.headers.get("x-client-secret", "")
    if client is None or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        return _unauthorized()
    if client.client_id != caller.client_id:
        return _unauthorized()
    if scope not in caller.scope:
        return _error(403, *_FAULT_BODIES[403])
    return caller


def _issue(name: str, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, **extra, "path": [name], "message": message}


def _int_param(request: Request, name: str, default: int, maximum: int | None) -> tuple[int, dict[str, Any] | None]:
    """Parse like zod's `z.coerce.number().int().min(1).max(...)`, returning a zod-style issue on failure."""
    raw = request.query_params.get(name)
    if raw is None:
        return default, None
    try:
        number = float(raw) if raw.strip() else float("nan")
    except ValueError:
        number = float("nan")
    if number != number:  # NaN
        message = "Expected number, received nan"
        return default, _issue(name, "invalid_type", message, expected="number", received="nan")
    if not number.is_integer():
        message = "Expected integer, received float"
        return default, _issue(name, "invalid_type", message, expected="integer", received="float")
    bounds = {"type": "number", "inclusive": True, "exact": False}
    if number < 1:
        message = "Number must be greater than or equal to 1"
        return default, _issue(name, "too_small", message, minimum=1, **bounds)
    if maximum is not None and number > maximum:
        message = f"Number must be less than or equal to {maximum}"
        return default, _issue(name, "too_big", message, maximum=maximum, **bounds)
    return int(number), None


async def health(request: Request) -> Response:
    _begin(request)
    return JSONResponse({"status": "OK", "service": "connect-apis", "version": VERSION, "environment": "emulator"})


async def integrations(request: Request) -> Response:
    begun = await _caller(request, "integrations:read")
    if isinstance(begun, Response):
        return begun
    state, caller = begun
    page, page_issue = _int_param(request, "page", 1, None)
    page_size, size_issue = _int_param(request, "pageSize", 25, 200)
    issues = [issue for issue in (page_issue, size_issue) if issue is not None]
    if issues:
        return _error(400, "invalid_parameters", "Invalid query parameters", issues)
    user = state.users_by_sub[caller.sub]
    syncs.settle(state, user.sub)
    items = render_integrations(user.integrations, imports=state.imports[user.sub], base_url=state.config.base_url)
    key = request.query_params.get("searchedKey", "")
    if key.strip():
        wanted = {seed.wallet_id for seed in user.integrations if matches(seed, key)}
        items = [item for item in items if item["walletId"] in wanted]
    start = (page - 1) * page_size
    body = {
        "data": items[start : start + page_size],
        "pagination": {
            "page": page,
            "pageSize": page_size,
            "totalCount": len(items),
            "hasNextPage": start + page_size < len(items),
            "hasPreviousPage": page > 1,
        },
        "user_id": user.sub,
        "timestamp": int(state.now() * 1000),
    }
    return JSONResponse(body)


async def userinfo(request: Request) -> Response:
    begun = await _caller(request, "users:read")
    if isinstance(begun, Response):
        return begun
    state, caller = begun
    user = state.users_by_sub[caller.sub]
    info: dict[str, Any] = {"sub": user.sub}
    if "profile" in caller.scope:
        info.update(name=user.name)
    if "email" in caller.scope:
        info.update(email=user.email, email_verified=user.email_verified)
    if "profile" in caller.scope:
        info.update(
            preferred_username=user.username,
            language=user.language,
            transaction_limit=state.effective_limit(user.sub, caller.client_id),
        )
    body = {"message": "User info retrieved successfully", "userInfo": info, "scopes": caller.scope}
    return JSONResponse(body)


# Assumption: the resync twin's scope is not documented; reading integrations is taken to be enough to ask
# for a fresh sync of one (it changes no user data, only refreshes it from the source).
_RESYNC_SCOPE = "integrations:read"


async def resync(request: Request) -> Response:
    begun = await _caller(request, _RESYNC_SCOPE)
    if isinstance(begun, Response):
        return begun
    state, caller = begun
    wallet_id = request.path_params["integration_id"]
    user = state.users_by_sub[caller.sub]
    seed = next((s for s in user.integrations if s.wallet_id == wallet_id), None)
    if seed is None:
        return _not_found("Integration not found")
    job = syncs.queue(state, user.sub, seed, state.effective_limit(user.sub, caller.client_id))
    data = {"job_id": job.job_id, "status": "queued", "integration_id": job.integration_id}
    return JSONResponse({"success": True, "data": data}, status_code=202)


async def sync_job(request: Request) -> Response:
    begun = await _caller(request, _RESYNC_SCOPE)
    if isinstance(begun, Response):
        return begun
    state, caller = begun
    job = state.sync_jobs.get(request.path_params["job_id"])
    if job is None or job.sub != caller.sub:
        return _not_found("Sync job not found")
    data = {"job_id": job.job_id, "integration_id": job.integration_id, "status": syncs.status(state, job)}
    return JSONResponse({"success": True, "data": data})


async def not_found(request: Request) -> Response:
    _begin(request)
    return _error(404, "not_found", f"Route {request.method} {request.url.path} not found")


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/v1/integrations", integrations, methods=["GET"]),
    Route("/v1/userinfo", userinfo, methods=["GET"]),
    Route("/v1/integrations/{integration_id}/resync", resync, methods=["POST"]),
    Route("/v1/sync/{job_id}", sync_job, methods=["GET"]),
    Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
