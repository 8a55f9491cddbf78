"""The ``/connect/*`` operations (the Kryptos Connect widget) and the administrator's grant revocation, written
out from :mod:`bff.routes.connect` and :mod:`bff.services.connect`."""

from __future__ import annotations

from typing import Any

from bff.proxy.routes import GRANT_ID
from bff_dev.openapi.common import (
    CSRF_REF,
    JSON,
    NO_STORE,
    SESSION_SECURITY,
    default_problem,
    operation_id,
    problem_response,
    rate_limited,
    store_down,
)

# The grant cookie, the session cookie, the native app's session token, or none of them (a first visit).
CONNECT_SECURITY: list[dict[str, list[str]]] = [
    {"sessionCookie": []},
    {"connectCookie": []},
    {"sessionCookie": [], "connectCookie": []},
    {"sessionToken": []},
    {},
]
# Every call below may reach the Connect API: a refusal or an answer bff cannot read is `connect_failed`.
UPSTREAM_502 = ("connect_failed", "upstream_unavailable")
CALLER_401 = (
    "`not_authenticated`: an `Authorization: Session` header that names no live session (a browser without a "
    "session is simply anonymous here)"
)
ATTACH_401 = "`session_expired`: the session ended while the grant was being put on it; call again"


def _set_cookie(description: str) -> dict[str, Any]:
    return {"Set-Cookie": {"description": description, "schema": {"type": "string"}}}


def _ok(schema_ref: str, description: str, cookies: str | None) -> dict[str, Any]:
    headers = {**NO_STORE, **(_set_cookie(cookies) if cookies else {})}
    return {
        "description": description,
        "headers": headers,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _unauthenticated(*codes: str, why: str) -> dict[str, Any]:
    response = problem_response(401, *codes)
    response["description"] = response["description"].rstrip(".") + f"; {why}."
    return response


def _upstream_errors(*more_503: str) -> dict[str, Any]:
    return {
        "502": problem_response(502, *UPSTREAM_502),
        "503": store_down(*more_503),
        "504": problem_response(504, "upstream_timeout"),
        "default": default_problem(),
    }


def connect_paths() -> dict[str, dict[str, Any]]:
    link_token = {
        "tags": ["connect"],
        "operationId": "connect_link_token",
        "summary": "A link token for the Kryptos Connect widget",
        "description": (
            "What the Web SDK's `generateLinkToken` expects. bff asks the Connect API for a link token with the "
            "client credentials and `BFF_CONNECT_SCOPES`, adding the token of the grant this caller may use (its "
            "session's; else the browser's grant cookie; else, signed in, a grant bound to the user). "
            "`isAuthorized` is true when Kryptos accepted that grant: the widget then skips consent and no new "
            "public token comes, and the grant is put on the caller's session (a browser without a session "
            "gets a new one, with the session cookie). No request body is read. Rate limited per client "
            "address together with `POST /connect/exchange` (`BFF_RATE_LIMIT_CONNECT`), before anything else; and, "
            "for every address and replica together, by `BFF_CONNECT_BUDGET_PER_MINUTE` (503 `connect_busy`, "
            "Kryptos not called)."
        ),
        "security": CONNECT_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": _ok(
                "ConnectLinkToken",
                "A link token for the widget.",
                "With `isAuthorized` true: the grant cookie again, if the grant came by it, and, without a "
                "session yet, the new session cookie.",
            ),
            "401": _unauthenticated("not_authenticated", "session_expired", why=f"{CALLER_401}; {ATTACH_401}"),
            "403": problem_response(403, "csrf_required", "origin_not_allowed"),
            "429": rate_limited("per client address (shared with `POST /connect/exchange`)"),
            **_upstream_errors("connect_busy"),
        },
    }
    exchange_body = {
        "type": "object",
        "required": ["public_token"],
        "properties": {
            "public_token": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_.~-]{1,512}$",
                "description": "The one-time token the widget's `onConnectSuccess` returned; else 400 "
                "`invalid_public_token`.",
            }
        },
        "description": "At most 2048 bytes; other members (the rest of the widget's consent) are ignored.",
    }
    exchange = {
        "tags": ["connect"],
        "operationId": "connect_exchange",
        "summary": "Exchange the widget's public token for a grant held by bff",
        "description": (
            "bff exchanges the public token at the Connect API (with the client secret) for a 15-year access "
            "token and its grant id, and keeps both server-side (encrypted in Redis); neither ever reaches the "
            "caller. The grant is put on the caller's session (a browser without a session gets a new one, "
            "with the session cookie) and, signed in, bound to the user's subject. A browser also gets the "
            "grant cookie (a signed reference to the grant, never the token); a native app "
            "(`Authorization: Session`) gets no cookie. Should the grant not be storable (503), it is revoked "
            "at Kryptos at once; should it be stored but no session take it (401 `session_expired`, 503), the "
            "error still carries the grant cookie, so the next `GET /connect/status` finds the grant. Rate "
            "limited per client address together with `POST /connect/link-token` (`BFF_RATE_LIMIT_CONNECT`), "
            "before the body is read, and by the deployment's `BFF_CONNECT_BUDGET_PER_MINUTE` (503 `connect_busy`)."
        ),
        "security": CONNECT_SECURITY,
        "parameters": [CSRF_REF],
        "requestBody": {"required": True, "content": {JSON: {"schema": exchange_body}}},
        "responses": {
            "200": _ok(
                "ConnectExchanged",
                "Connected.",
                "Browsers: the grant cookie (`__Host-bff-connect`: `HttpOnly`, `SameSite=Strict`, `Path=/`, "
                "`BFF_CONNECT_IDLE_TIMEOUT`, at most 400 days); and, without a session yet, the session cookie.",
            ),
            "400": problem_response(
                400, "invalid_body", "invalid_public_token", "public_token_used", "public_token_expired"
            ),
            "401": _unauthenticated("not_authenticated", "session_expired", why=f"{CALLER_401}; {ATTACH_401}"),
            "403": problem_response(403, "csrf_required", "origin_not_allowed"),
            "429": rate_limited("per client address (shared with `POST /connect/link-token`)"),
            **_upstream_errors("connect_busy"),
        },
    }
    status = {
        "tags": ["connect"],
        "operationId": "connect_status",
        "summary": "Whether this caller has a Kryptos Connect grant, per Kryptos's check-session",
        "description": (
            "The grant this caller may use (its session's; else the browser's grant cookie; else, signed in, "
            "a grant bound to the user), checked with the Connect API's check-session; each bff process reuses "
            "an answer for `BFF_CONNECT_STATUS_CACHE_SECONDS`. No grant: `connected` false, without a call to "
            "Kryptos. A grant Kryptos no longer knows is forgotten, and the answer is `connected` false. A "
            "connected grant is put on the caller's session (a browser without a session gets a new one, with "
            "the session cookie), and the grant cookie it came by is renewed; a grant cookie that names no live "
            "grant is cleared."
        ),
        "security": CONNECT_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": _ok(
                "ConnectStatus",
                "The connection, as Kryptos sees it.",
                "When connected: the grant cookie again (its lifetime slides with use) if the grant came by it, "
                "and, without a session yet, the session cookie; when not: a grant cookie naming no live grant, "
                "cleared.",
            ),
            "401": _unauthenticated("not_authenticated", "session_expired", why=f"{CALLER_401}; {ATTACH_401}"),
            "403": problem_response(403, "csrf_required"),
            **_upstream_errors(),
        },
    }
    disconnect = {
        "tags": ["connect"],
        "operationId": "connect_disconnect",
        "summary": "End this caller's Kryptos Connect grant",
        "description": (
            "Revokes the grant this caller may use at the Connect API, then forgets it (for every session and "
            "replica). If Kryptos cannot be reached or refuses, the grant is kept and the call may be repeated "
            "(the cookie stays too). Without a grant there is nothing to revoke: still 200. A browser's grant "
            "cookie is cleared. A signed-in session goes back to its own access token at once; a Connect-only "
            "session is not ended here, but its next data call answers 401 `connect_revoked` and ends it. If "
            "Kryptos says the grant belongs to another client (`BFF_CLIENT_ID` changed), bff forgets it. No "
            "request body is read."
        ),
        "security": CONNECT_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": _ok(
                "ConnectDisconnected",
                "Disconnected (or there was nothing to disconnect).",
                "Browsers: the grant cookie, cleared.",
            ),
            "401": _unauthenticated("not_authenticated", why=CALLER_401),
            "403": problem_response(403, "csrf_required", "origin_not_allowed"),
            **_upstream_errors(),
        },
    }
    return {
        "/connect/link-token": {"post": link_token},
        "/connect/exchange": {"post": exchange},
        "/connect/status": {"get": status},
        "/connect/disconnect": {"post": disconnect},
    }


def grant_admin_paths() -> dict[str, dict[str, Any]]:
    """``POST /api/developer/grants/{grantId}/revoke``: served by :mod:`bff.routes.connect`, not the route table."""
    path = "/api/developer/grants/{grantId}/revoke"
    revoke = {
        "tags": ["connect"],
        "operationId": operation_id("POST", path),
        "summary": "Revoke a Kryptos Connect grant by id (administrators)",
        "description": (
            "Admin only (`BFF_ADMIN_SUBJECTS`). Revokes the grant at the Connect API (client credentials only), "
            "then forgets bff's copy, if it has one, and what bff learned of the grant: every session using it "
            "answers 401 `connect_revoked` on its next data call. A grant Kryptos no longer knows but bff still "
            "holds is forgotten too (200); one neither knows is 404 `not_found`. If Kryptos cannot be reached "
            "or refuses, nothing is forgotten and the call may be repeated. No request body is read."
        ),
        "security": SESSION_SECURITY,
        "parameters": [
            CSRF_REF,
            {
                "name": "grantId",
                "in": "path",
                "required": True,
                "description": "The grant id (`cgrant_…`); else 400 `invalid_parameter`.",
                "schema": {"type": "string", "pattern": GRANT_ID.pattern},
            },
        ],
        "responses": {
            "200": _ok("GrantRevoked", "Revoked at Kryptos and forgotten here.", None),
            "400": problem_response(400, "invalid_parameter", "invalid_path"),
            "401": problem_response(401, "not_authenticated", "session_expired"),
            "403": _forbidden_by_kryptos(
                problem_response(403, "csrf_required", "origin_not_allowed", "forbidden", "limit_management_disabled")
            ),
            "404": problem_response(404, "not_found"),
            **_upstream_errors(),
        },
    }
    return {path: {"post": revoke}}


def _forbidden_by_kryptos(response: dict[str, Any]) -> dict[str, Any]:
    also = "; `forbidden` also when Kryptos says the grant belongs to another client."
    response["description"] = response["description"].rstrip(".") + also
    return response


def connect_schemas() -> dict[str, Any]:
    scopes = {"type": "array", "items": {"type": "string"}, "description": "The scopes granted."}
    return {
        "ConnectLinkToken": {
            "type": "object",
            "required": ["link_token", "isAuthorized"],
            "properties": {
                "link_token": {"type": "string", "minLength": 1, "description": "For the widget; short-lived."},
                "isAuthorized": {
                    "type": "boolean",
                    "description": "Kryptos accepted this caller's stored grant: the widget skips consent.",
                },
            },
        },
        "ConnectExchanged": {
            "type": "object",
            "required": ["connected", "workspace_id", "scopes"],
            "properties": {
                "connected": {"const": True},
                "workspace_id": {"type": "string", "minLength": 1},
                "scopes": scopes,
            },
        },
        "ConnectStatus": {
            "type": "object",
            "required": ["connected", "workspace_id", "workspace_name", "scopes"],
            "properties": {
                "connected": {"type": "boolean"},
                "workspace_id": {"type": ["string", "null"], "description": "Null when not connected."},
                "workspace_name": {
                    "type": ["string", "null"],
                    "description": "As Kryptos's check-session names it; null when not connected or not given.",
                },
                "scopes": {**scopes, "description": "The scopes granted; empty when not connected."},
            },
        },
        "ConnectDisconnected": {
            "type": "object",
            "required": ["connected"],
            "properties": {"connected": {"const": False}},
        },
        "GrantRevoked": {
            "type": "object",
            "required": ["revoked", "grant_id"],
            "properties": {"revoked": {"const": True}, "grant_id": {"type": "string"}},
        },
        "GrantFacts": {
            "type": "object",
            "description": (
                "What bff learned of a grant from earlier transaction-limit answers (Kryptos's grant list "
                "carries neither); each member null until something was learned."
            ),
            "required": ["kind", "transaction_limit", "enable_limiter"],
            "properties": {
                "kind": {
                    "enum": ["guest", "linked", None],
                    "description": "`guest`: a limit was set; `linked`: Kryptos answered `NOT_ANON_USER`.",
                },
                "transaction_limit": {"type": ["integer", "null"]},
                "enable_limiter": {"type": ["boolean", "null"]},
            },
        },
        "GrantList": {
            "type": "object",
            "description": (
                "Kryptos's `/token/grants` answer, passed through with a `known` object added to each grant. "
                "An answer not of this shape passes through untouched."
            ),
            "properties": {
                "data": {
                    "type": "object",
                    "properties": {
                        "grants": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["known"],
                                "properties": {
                                    "grant_id": {"type": "string"},
                                    "known": {"$ref": "#/components/schemas/GrantFacts"},
                                },
                            },
                        }
                    },
                }
            },
        },
    }
