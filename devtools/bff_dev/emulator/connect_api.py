"""The Connect API under `/connect`: `GET /token/grants` and the transaction-limit PATCH.

Authenticated by client credentials only (`X-Client-Id`, `X-Client-Secret`); errors use the Connect
shape `{success: false, error, code}`. Requests arrive camelCase and answers leave snake_case, as the
backend guide documents.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff_dev.emulator.config import EmulatorClient
from bff_dev.emulator.state import EmulatorState


def _error(status: int, error: str, code: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error, "code": code}, status_code=status)


def _begin(request: Request) -> tuple[EmulatorState, EmulatorClient | None]:
    state: EmulatorState = request.app.state.emulator
    state.record_request(request)
    state.count("connect_api")
    client = state.clients.get(request.headers.get("x-client-id", ""))
    secret = request.headers.get("x-client-secret", "")
    if client is None or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        return state, None
    return state, client


def _invalid_client() -> JSONResponse:
    return _error(401, "Invalid client credentials", "INVALID_CLIENT")


async def list_grants(request: Request) -> Response:
    state, client = _begin(request)
    if client is None:
        return _invalid_client()
    grants = [
        {
            "grant_id": grant.grant_id,
            "workspace_id": state.users_by_sub[grant.sub].workspace_id,
            "scopes": grant.scopes,
            "created_at": grant.created_at,
            "expires_at": grant.expires_at,
        }
        for grant in state.connect_grants.values()
        if grant.client_id == client.client_id
    ]
    return JSONResponse({"success": True, "data": {"grants": grants, "count": len(grants)}})


def _validate(body: object) -> tuple[int | None, bool | None] | str:
    """The PATCH body's `(transactionLimit, enableLimiter)`, or what is wrong with it."""
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if "transactionLimit" not in body and "enableLimiter" not in body:
        return "At least one of transactionLimit or enableLimiter is required"
    limit: int | None = None
    if "transactionLimit" in body:
        value = body["transactionLimit"]
        # JSON has one number type; 10000.0 is the integer 10000 to a JavaScript server.
        integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not integral or value <= 0:
            return "transactionLimit must be a positive integer"
        limit = int(value)
    enable: bool | None = None
    if "enableLimiter" in body:
        if not isinstance(body["enableLimiter"], bool):
            return "enableLimiter must be a boolean"
        enable = body["enableLimiter"]
    return limit, enable


async def update_transaction_limit(request: Request) -> Response:
    state, client = _begin(request)
    if client is None:
        return _invalid_client()
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        return _error(400, "Request body must be valid JSON", "VALIDATION_ERROR")
    parsed = _validate(body)
    if isinstance(parsed, str):
        return _error(400, parsed, "VALIDATION_ERROR")
    # No await from here on: the change and the answer see the same state.
    grant = state.connect_grants.get(request.path_params["grant_id"])
    if grant is None:
        return _error(404, "Grant not found", "GRANT_NOT_FOUND")
    if grant.client_id != client.client_id:
        return _error(403, "Grant does not belong to this client", "ACCESS_DENIED")
    if not state.users_by_sub[grant.sub].is_guest:
        return _error(400, "User is not a Guest account. Limits only apply to Guest users.", "NOT_ANON_USER")
    limit, enable = parsed
    if limit is not None:
        grant.limit.transaction_limit = limit
    if enable is not None:
        grant.limit.enable_limiter = enable
    data = {
        "grant_id": grant.grant_id,
        "user_id": grant.sub,
        "transaction_limit": grant.limit.transaction_limit,
        "enable_limiter": grant.limit.enable_limiter is not False,
    }
    return JSONResponse({"success": True, "data": data})


async def not_found(request: Request) -> Response:
    _begin(request)
    return _error(404, f"Route {request.method} {request.url.path} not found", "NOT_FOUND")


routes = [
    Route("/token/grants", list_grants, methods=["GET"]),
    Route("/developer/grants/{grant_id}/transaction-limit", update_transaction_limit, methods=["PATCH"]),
    Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
