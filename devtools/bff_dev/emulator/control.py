"""Test and development controls under `/_emulator`: inspect requests and counters, inject faults, rotate
keys, trigger back-channel logout, expire tokens, mint tokens without a browser and move the clock.

Always on: the emulator exists only for development and tests. Everything a test needs from the state is
reachable here over HTTP, because tests often run the emulator in another thread or process.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff_dev.emulator.backchannel import end_sessions, send_logouts
from bff_dev.emulator.config import DEFAULT_SCOPES, WORKSPACE_DEFAULT_CAP
from bff_dev.emulator.issuance import mint_refresh_token, token_response
from bff_dev.emulator.limits import LimitSetting
from bff_dev.emulator.state import TOKEN_FAILURES, DataApiFailure, EmulatorState, RuntimeSettings


class _BadRequest(Exception):
    pass


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _BadRequest("body must be JSON") from exc
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object")
    return body


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _number(body: dict[str, Any], name: str, *, integer: bool = True, minimum: float = 0) -> float:
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        raise _BadRequest(f"{name} must be {'an integer' if integer else 'a number'}")
    if value < minimum:
        raise _BadRequest(f"{name} must be >= {minimum:g}")
    return value


def _settings_view(state: EmulatorState) -> dict[str, Any]:
    s = state.settings
    fault = s.data_api_failure
    return {
        "access_token_ttl": s.access_token_ttl,
        "refresh_token_ttl": s.refresh_token_ttl,
        "id_token_ttl": s.id_token_ttl,
        "code_ttl": s.code_ttl,
        "rotate_refresh_tokens": s.rotate_refresh_tokens,
        "token_delay_seconds": s.token_delay_seconds,
        "token_failure": s.token_failure,
        "id_token_signing_algs": list(s.id_token_algs),
        "data_api_failure": None
        if fault is None
        else {
            "status": fault.status,
            "retry_after": fault.retry_after,
            "delay_seconds": fault.delay_seconds,
            "count": fault.remaining,
        },
        "workspace_limits": {
            client_id: {"transaction_limit": limit.transaction_limit, "enable_limiter": limit.enable_limiter}
            for client_id, limit in state.workspace_limits.items()
        },
    }


def _data_api_failure(value: Any) -> DataApiFailure | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= {"status", "retry_after", "delay_seconds", "count"}:
        raise _BadRequest("data_api_failure must be null or {status?, retry_after?, delay_seconds?, count?}")
    fault = DataApiFailure()
    if "status" in value:
        fault.status = int(_number(value, "status", minimum=400))
    if "retry_after" in value:
        fault.retry_after = int(_number(value, "retry_after"))
    if "delay_seconds" in value:
        fault.delay_seconds = _number(value, "delay_seconds", integer=False)
    if "count" in value:
        fault.remaining = int(_number(value, "count", minimum=1))
    return fault


def _workspace_limit(limits: dict[str, LimitSetting], default_client_id: str, value: Any) -> None:
    if not isinstance(value, dict) or not set(value) <= {"client_id", "transaction_limit", "enable_limiter"}:
        raise _BadRequest("workspace_limit must be {client_id?, transaction_limit?, enable_limiter?}")
    client_id = value.get("client_id", default_client_id)
    if client_id not in limits:
        raise _BadRequest("unknown client_id")
    setting = limits[client_id]
    if "transaction_limit" in value:
        limit = value["transaction_limit"]
        if limit is not None:
            limit = int(_number(value, "transaction_limit", minimum=1))
            if limit > WORKSPACE_DEFAULT_CAP:
                raise _BadRequest(f"the workspace default is capped at {WORKSPACE_DEFAULT_CAP}")
        setting.transaction_limit = limit
    if "enable_limiter" in value:
        if value["enable_limiter"] is not None and not isinstance(value["enable_limiter"], bool):
            raise _BadRequest("enable_limiter must be a boolean or null")
        setting.enable_limiter = value["enable_limiter"]


def _apply_config(
    s: RuntimeSettings, limits: dict[str, LimitSetting], default_client_id: str, body: dict[str, Any]
) -> None:
    known = {"access_token_ttl", "refresh_token_ttl", "id_token_ttl", "code_ttl", "rotate_refresh_tokens",
             "token_delay_seconds", "token_failure", "data_api_failure", "workspace_limit",
             "id_token_signing_algs"}  # fmt: skip
    unknown = set(body) - known
    if unknown:
        raise _BadRequest(f"unknown settings: {', '.join(sorted(unknown))}")
    for name in ("access_token_ttl", "refresh_token_ttl", "id_token_ttl", "code_ttl"):
        if name in body:
            setattr(s, name, int(_number(body, name)))
    if "rotate_refresh_tokens" in body:
        if not isinstance(body["rotate_refresh_tokens"], bool):
            raise _BadRequest("rotate_refresh_tokens must be a boolean")
        s.rotate_refresh_tokens = body["rotate_refresh_tokens"]
    if "token_delay_seconds" in body:
        s.token_delay_seconds = _number(body, "token_delay_seconds", integer=False)
    if "token_failure" in body:
        if body["token_failure"] is not None and body["token_failure"] not in TOKEN_FAILURES:
            raise _BadRequest(f"token_failure must be null or one of {', '.join(TOKEN_FAILURES)}")
        s.token_failure = body["token_failure"]
    if "id_token_signing_algs" in body:
        algs = body["id_token_signing_algs"]
        if not isinstance(algs, list) or not algs or not all(isinstance(a, str) and a for a in algs):
            raise _BadRequest("id_token_signing_algs must be a non-empty list of algorithm names")
        s.id_token_algs = tuple(algs)
    if "data_api_failure" in body:
        s.data_api_failure = _data_api_failure(body["data_api_failure"])
    if "workspace_limit" in body:
        _workspace_limit(limits, default_client_id, body["workspace_limit"])


async def config(request: Request) -> Response:
    state = _state(request)
    if request.method == "POST":
        # Changes are made on copies and swapped in at the end, so a rejected request changes nothing.
        settings = replace(state.settings)
        limits = {k: replace(v) for k, v in state.workspace_limits.items()}
        try:
            _apply_config(settings, limits, state.config.default_client_id, await _json(request))
        except _BadRequest as exc:
            return _bad(str(exc))
        state.settings, state.workspace_limits = settings, limits
    return JSONResponse(_settings_view(state))


async def reset(request: Request) -> Response:
    state = _state(request)
    try:
        body = await _json(request)
    except _BadRequest as exc:
        return _bad(str(exc))
    state.reset(keys=bool(body.get("keys", False)))
    return JSONResponse({"reset": True, "published_kids": state.keys.published_kids()})


async def requests_log(request: Request) -> Response:
    state = _state(request)
    if request.method == "DELETE":
        cleared = len(state.requests)
        state.requests.clear()
        return JSONResponse({"cleared": cleared})
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        return _bad("limit must be an integer")
    recent = list(state.requests)[-limit:] if limit > 0 else []
    return JSONResponse({"requests": recent, "count": len(recent)})


async def stats(request: Request) -> Response:
    return JSONResponse(_state(request).stats.as_dict())


async def rotate_keys(request: Request) -> Response:
    state = _state(request)
    try:
        body = await _json(request)
    except _BadRequest as exc:
        return _bad(str(exc))
    kid = state.keys.rotate(drop_old=bool(body.get("drop_old", False)))
    return JSONResponse({"kid": kid, "published_kids": state.keys.published_kids()})


async def backchannel_logout(request: Request) -> Response:
    state = _state(request)
    try:
        body = await _json(request)
    except _BadRequest as exc:
        return _bad(str(exc))
    sub, sid = body.get("sub"), body.get("sid")
    if sub is None and sid is None:
        return _bad("give sub or sid")
    if sid is not None:
        session = state.sessions.get(str(sid))
        if session is None:
            return _bad("unknown sid", 404)
        sub = sub or session.sub
    if str(sub) not in state.users_by_sub:
        return _bad("unknown sub", 404)
    clients = list(state.clients.values())
    if "client_id" in body:
        clients = [c for c in clients if c.client_id == body["client_id"]]
        if not clients:
            return _bad("unknown client_id")
    end_sessions(state, sub=str(sub), sid=None if sid is None else str(sid))
    deliveries = await send_logouts(state, clients, sub=str(sub), sid=None if sid is None else str(sid))
    return JSONResponse({"deliveries": [d.as_dict() for d in deliveries]})


async def deliveries(request: Request) -> Response:
    return JSONResponse({"deliveries": [d.as_dict() for d in _state(request).deliveries]})


async def expire_access_tokens(request: Request) -> Response:
    return JSONResponse({"expired": _state(request).expire_access_tokens()})


async def advance_clock(request: Request) -> Response:
    """Move the emulator's clock forward `seconds` (never back): link, public and access tokens expire,
    sync jobs finish. Reset puts it back to the wall clock."""
    state = _state(request)
    try:
        body = await _json(request)
        if "seconds" not in body:
            raise _BadRequest("give seconds")
        seconds = _number(body, "seconds", integer=False)
    except _BadRequest as exc:
        return _bad(str(exc))
    state.clock_offset += seconds
    return JSONResponse({"offset": state.clock_offset, "now": state.now()})


async def issue_tokens(request: Request) -> Response:
    """A normal token response (always with a refresh token) for a seeded user, without a browser."""
    state = _state(request)
    try:
        body = await _json(request)
        user = state.users_by_username.get(str(body.get("username", "")))
        if user is None:
            raise _BadRequest("unknown username")
        client_id = str(body.get("client_id", state.config.default_client_id))
        if client_id not in state.clients:
            raise _BadRequest("unknown client_id")
        scope = str(body.get("scope", " ".join(DEFAULT_SCOPES))).split()
        ttl = int(_number(body, "access_token_ttl", minimum=1)) if "access_token_ttl" in body else None
    except _BadRequest as exc:
        return _bad(str(exc))
    granted = list(dict.fromkeys(s for s in [*scope, "offline_access"] if s in DEFAULT_SCOPES))
    session = state.start_session(user.sub)
    grant = state.create_grant(
        client_id=client_id, sub=user.sub, scope=granted, sid=session.sid, auth_time=session.auth_time, nonce=None
    )
    refresh = mint_refresh_token(state, grant).token
    return JSONResponse(token_response(state, grant, user, nonce=None, refresh_token=refresh, access_token_ttl=ttl))


async def overview(request: Request) -> Response:
    """Users (seeded and made in the widget) with their Connect grants and effective limits, and the OIDC
    grants issued so far."""
    state = _state(request)
    client_id = state.config.default_client_id
    users = [
        {
            "username": u.username,
            "sub": u.sub,
            "name": u.name,
            "email": u.email,
            "account_type": u.account_type,
            "created_in_widget": u.created_in_widget,
            "workspace_id": u.workspace_id,
            "transaction_limit": state.effective_limit(u.sub, client_id),
            "grants": [
                {
                    "grant_id": g.grant_id,
                    "client_id": g.client_id,
                    "scopes": g.scopes,
                    "created_at": g.created_at,
                    "revoked": g.revoked,
                    "transaction_limit": g.limit.transaction_limit,
                    "enable_limiter": g.limit.enable_limiter,
                }
                for g in state.connect_grants.values()
                if g.sub == u.sub
            ],
        }
        for u in state.users_by_sub.values()
    ]
    grants = [
        {"grant_id": g.grant_id, "client_id": g.client_id, "sub": g.sub, "sid": g.sid, "scope": " ".join(g.scope),
         "revoked": g.revoked, "revoked_reason": g.revoked_reason}
        for g in state.grants.values()
    ]  # fmt: skip
    sessions = [{"sid": s.sid, "sub": s.sub, "ended": s.ended} for s in state.sessions.values()]
    return JSONResponse({"users": users, "oidc_grants": grants, "sessions": sessions})


routes = [
    Route("/requests", requests_log, methods=["GET", "DELETE"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/config", config, methods=["GET", "POST"]),
    Route("/reset", reset, methods=["POST"]),
    Route("/rotate-keys", rotate_keys, methods=["POST"]),
    Route("/backchannel-logout", backchannel_logout, methods=["POST"]),
    Route("/deliveries", deliveries, methods=["GET"]),
    Route("/expire-access-tokens", expire_access_tokens, methods=["POST"]),
    Route("/advance-clock", advance_clock, methods=["POST"]),
    Route("/issue-tokens", issue_tokens, methods=["POST"]),
    Route("/state", overview, methods=["GET"]),
]
