"""The Connect API under `/connect`: the widget flow's backend calls, `GET /token/grants` and the
transaction-limit PATCH.

Authenticated by client credentials: the `X-Client-Id` and `X-Client-Secret` headers, or (G2 overview:
"which the SDK examples use") `client_id` and `client_secret` in the JSON body when the headers are absent.
Errors use the Connect shape `{success: false, error, code}`. Requests arrive camelCase and answers leave
snake_case, as the backend guide documents. The widget's own endpoints (`X-LINK-TOKEN`) are in `widget.py`.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff_dev.emulator.config import EmulatorClient
from bff_dev.emulator.connect_records import iso_z
from bff_dev.emulator.connect_tokens import (
    ACCESS_TOKEN_EXPIRES_IN,
    ConnectError,
    checked_scopes,
    client_grant,
    exchange,
    mint_link_token,
)
from bff_dev.emulator.state import EmulatorState

_UNPARSABLE = object()  # a body that is not JSON


def _error(status: int, error: str, code: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": error, "code": code}, status_code=status)


def _authenticate(state: EmulatorState, request: Request, body: Any) -> EmulatorClient:
    client_id = request.headers.get("x-client-id")
    secret = request.headers.get("x-client-secret")
    if client_id is None and secret is None and isinstance(body, dict):
        client_id, secret = body.get("client_id"), body.get("client_secret")
    client = state.clients.get(client_id) if isinstance(client_id, str) else None
    if client is None or not isinstance(secret, str):
        raise ConnectError(401, "Invalid client credentials", "INVALID_CLIENT")
    if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        raise ConnectError(401, "Invalid client credentials", "INVALID_CLIENT")
    return client


async def _begin(request: Request) -> tuple[EmulatorState, EmulatorClient, Any]:
    """Record and count the call, read the JSON body (None when empty), authenticate the client."""
    state: EmulatorState = request.app.state.emulator
    state.record_request(request)
    state.count("connect_api")
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = _UNPARSABLE
    client = _authenticate(state, request, body)
    if body is _UNPARSABLE:
        raise ConnectError(400, "Request body must be valid JSON", "VALIDATION_ERROR")
    return state, client, body


def _fields(body: Any, *names: str) -> dict[str, Any]:
    """The body's values for `names` (None when absent); the body must be a JSON object."""
    if not isinstance(body, dict):
        raise ConnectError(400, "Request body must be a JSON object", "VALIDATION_ERROR")
    return {name: body.get(name) for name in names}


def _required_string(fields: dict[str, Any], name: str) -> str:
    value = fields[name]
    if not isinstance(value, str) or not value:
        raise ConnectError(400, f"{name} is required", "VALIDATION_ERROR")
    return value


async def create_link_token(request: Request) -> Response:
    try:
        state, client, body = await _begin(request)
        fields = _fields(body, "scopes", "access_token")
        link = mint_link_token(state, client.client_id, checked_scopes(fields["scopes"]), fields["access_token"])
    except ConnectError as exc:
        return exc.response()
    data: dict[str, Any] = {"link_token": link.token, "expires_at": iso_z(link.expires_at)}
    if link.existing_grant_id is not None:
        grant = state.connect_grants[link.existing_grant_id]
        user = state.users_by_sub[grant.sub]
        data.update(user_id=user.sub, workspace_id=user.workspace_id, has_existing_grant=True)
    return JSONResponse({"success": True, "data": data})


async def exchange_public_token(request: Request) -> Response:
    try:
        state, client, body = await _begin(request)
        grant = exchange(state, client.client_id, _required_string(_fields(body, "public_token"), "public_token"))
    except ConnectError as exc:
        return exc.response()
    data = {
        "access_token": grant.access_token,
        "grant_id": grant.grant_id,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_EXPIRES_IN,
        "scope": grant.scopes,
        "workspace_id": state.users_by_sub[grant.sub].workspace_id,
    }  # no user_id: the backend guide's response has none
    return JSONResponse({"success": True, "data": data})


async def check_session(request: Request) -> Response:
    try:
        state, client, body = await _begin(request)
        token = _fields(body, "access_token")["access_token"]
    except ConnectError as exc:
        return exc.response()
    grant = state.live_connect_grant(token) if isinstance(token, str) else None
    if grant is None or grant.client_id != client.client_id:
        # "token_expired" is the only reason the docs show; it stands for every token that no longer works.
        return JSONResponse({"success": True, "data": {"has_valid_session": False, "reason": "token_expired"}})
    user = state.users_by_sub[grant.sub]
    data = {
        "has_valid_session": True,
        "user_id": user.sub,
        "workspace_id": user.workspace_id,
        "workspace_name": user.workspace_name,
        "granted_scopes": grant.scopes,
        "grant_id": grant.grant_id,
    }
    return JSONResponse({"success": True, "data": data})


async def revoke(request: Request) -> Response:
    try:
        state, client, body = await _begin(request)
        grant_id = _required_string(_fields(body, "grant_id"), "grant_id")
        grant = client_grant(state, client.client_id, grant_id)
    except ConnectError as exc:
        return exc.response()
    grant.revoked = True  # its `cat_` token stops working at once (data API, check-session, link-token)
    return JSONResponse({"success": True, "message": "Grant revoked successfully"})


async def list_grants(request: Request) -> Response:
    try:
        state, client, _ = await _begin(request)
    except ConnectError as exc:
        return exc.response()
    grants = [
        {
            "grant_id": grant.grant_id,
            "workspace_id": state.users_by_sub[grant.sub].workspace_id,
            "scopes": grant.scopes,
            "created_at": grant.created_at,
            "expires_at": grant.expires_at,
        }
        for grant in state.connect_grants.values()
        if grant.client_id == client.client_id and state.grant_is_live(grant)
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
    try:
        state, client, body = await _begin(request)
        parsed = _validate(body)
        if isinstance(parsed, str):
            raise ConnectError(400, parsed, "VALIDATION_ERROR")
        # No await from here on: the change and the answer see the same state.
        grant = client_grant(state, client.client_id, request.path_params["grant_id"])
        if not state.users_by_sub[grant.sub].is_guest:
            raise ConnectError(400, "User is not a Guest account. Limits only apply to Guest users.", "NOT_ANON_USER")
    except ConnectError as exc:
        return exc.response()
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
    state: EmulatorState = request.app.state.emulator
    state.record_request(request)
    state.count("connect_api")
    return _error(404, f"Route {request.method} {request.url.path} not found", "NOT_FOUND")


routes = [
    Route("/link-token", create_link_token, methods=["POST"]),
    Route("/link-token/check-session", check_session, methods=["POST"]),
    Route("/token/exchange", exchange_public_token, methods=["POST"]),
    Route("/token/revoke", revoke, methods=["POST"]),
    Route("/token/grants", list_grants, methods=["GET"]),
    Route("/developer/grants/{grant_id}/transaction-limit", update_transaction_limit, methods=["PATCH"]),
    Route("/{rest:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
]
