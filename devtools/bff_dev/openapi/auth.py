"""The ``/auth/*`` and operational (health, readiness) operations, written out from their handlers."""

from __future__ import annotations

from typing import Any

from bff_dev.openapi.common import (
    CSRF_REF,
    FORM,
    JSON,
    SESSION_SECURITY,
    default_problem,
    idp_busy,
    json_response,
    problem_response,
    query,
    rate_limited,
    redirect,
    store_down,
)

_LOGIN_PARAMETERS: list[dict[str, Any]] = [
    query(
        "return_to",
        {"type": "string", "maxLength": 512, "pattern": "^/(?![/\\\\])[^\\\\\\u0000-\\u001f\\u007f]*$"},
        "Local path to return to after sign-in (default `/`): starts with one `/`, no backslash, no control "
        "characters, also once percent-decoded; else 400 `invalid_return_to`.",
    ),
    query(
        "login_hint",
        {"type": "string", "pattern": "^[A-Za-z0-9_.@+-]{1,128}$"},
        "Passed to the provider; letters, digits, `_ . @ + -`, 1 to 128 characters.",
    ),
    query(
        "prompt",
        {"type": "string", "enum": ["login", "consent", "select_account", "none"]},
        "Passed to the provider.",
    ),
    query(
        "client",
        {"type": "string", "enum": ["web", "mobile"]},
        "`mobile` starts a native app's sign-in (the parameters below); default `web`.",
    ),
    query(
        "redirect_uri",
        {"type": "string"},
        "client=mobile: exactly one of `BFF_MOBILE_REDIRECT_URIS` (else 400 `invalid_redirect_uri`).",
    ),
    query(
        "code_challenge",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
        "client=mobile: BASE64URL(SHA-256(code_verifier)), unpadded.",
    ),
    query("code_challenge_method", {"type": "string", "enum": ["S256"]}, "client=mobile: `S256` only."),
    query(
        "state",
        {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[ -~]+$"},
        "client=mobile: the app's state, returned on its redirect; printable ASCII.",
    ),
]


def auth_paths() -> dict[str, dict[str, Any]]:
    login = {
        "tags": ["auth"],
        "operationId": "login",
        "summary": "Start sign-in (browser navigation)",
        "description": (
            "Authorization code + PKCE (S256) with `state` and `nonce`; the login state is kept server-side and "
            "bound to this browser by a short-lived cookie. With `client=mobile` a native app starts its "
            "sign-in in the system browser; a bad start request is always a 400, never a redirect to the app."
        ),
        "security": [],
        "parameters": _LOGIN_PARAMETERS,
        "responses": {
            "302": redirect("To the provider's authorization endpoint.", sets_cookie=True),
            "400": problem_response(
                400,
                "invalid_return_to",
                "invalid_parameter",
                "mobile_disabled",
                "invalid_redirect_uri",
                "invalid_request",
            ),
            "429": rate_limited("per client address, or of sign-ins pending in this browser"),
            "502": problem_response(502, "idp_unavailable"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    callback = {
        "tags": ["auth"],
        "operationId": "callback",
        "summary": "The provider's redirect back (browser navigation)",
        "description": (
            "Checks `state` (single use), the browser binding cookie and `iss` (RFC 9207), exchanges the code, "
            "validates the ID token and creates a new session, which takes over the Kryptos Connect grant of the "
            "browser's previous session, or one bound to the user. Provider errors go back to the SPA as "
            "`/?login_error=<code>` (or to a native app's redirect URI as `error=`)."
        ),
        "security": [],
        "parameters": [
            query("state", {"type": "string"}, "The state bff sent to the provider."),
            query("code", {"type": "string"}, "The authorization code."),
            query("iss", {"type": "string"}, "The issuer that answered (RFC 9207)."),
            query("error", {"type": "string"}, "The provider's error code, if sign-in failed."),
        ],
        "responses": {
            "302": redirect(
                "Signed in: to `return_to` with the session cookie set (or, for a native app, to its redirect "
                "URI with a one-time `code`); or to `/?login_error=<code>`.",
                sets_cookie=True,
            ),
            "400": problem_response(
                400,
                "invalid_state",
                "login_binding_mismatch",
                "issuer_mismatch",
                "invalid_request",
                "login_failed",
                "invalid_id_token",
            ),
            "429": rate_limited("per client address"),
            "502": problem_response(502, "idp_unavailable"),
            "503": idp_busy(),
            "default": default_problem(),
        },
    }
    session = {
        "tags": ["auth"],
        "operationId": "session",
        "summary": "Who is signed in (no upstream call)",
        "description": (
            "401 `not_authenticated` without a session, and for a Connect-only session (one `/connect/*` started "
            "for a browser that connected without signing in); `session_expired` for one that has ended."
        ),
        "security": SESSION_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": {
                "description": "The signed-in user.",
                "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/SessionInfo"}}},
            },
            "401": problem_response(401, "not_authenticated", "session_expired"),
            "403": problem_response(403, "csrf_required"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    logout_post = {
        "tags": ["auth"],
        "operationId": "logout",
        "summary": "Sign out (SPA or native app)",
        "description": (
            "Revokes the refresh and access tokens at the provider (RFC 7009), deletes the session and clears "
            "the cookie. Without a session it only clears the cookie (`logout_url` null). A Kryptos Connect grant "
            "outlives it, and so does the grant cookie (`POST /connect/disconnect` ends the grant)."
        ),
        "security": [*SESSION_SECURITY, {}],
        "parameters": [CSRF_REF],
        "responses": {
            "200": json_response(
                {
                    "type": "object",
                    "required": ["logout_url"],
                    "properties": {"logout_url": {"type": ["string", "null"]}},
                },
                "Signed out; `logout_url` is the provider's end-session URL, when it has one.",
            ),
            "403": problem_response(403, "csrf_required", "origin_not_allowed"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    logout_get = {
        "tags": ["auth"],
        "operationId": "logout_navigation",
        "summary": "Sign out (browser navigation)",
        "description": (
            "`sid` (from `/auth/session`'s `logout_url`) must match the session: it is this form's CSRF "
            "defence. Without a session: a redirect to `/`."
        ),
        "security": [{"sessionCookie": []}, {}],
        "parameters": [query("sid", {"type": "string"}, "The session's logout id.")],
        "responses": {
            "302": redirect("To the provider's end-session endpoint, or to `/`.", sets_cookie=True),
            "400": problem_response(400, "invalid_logout_request"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    backchannel = {
        "tags": ["auth"],
        "operationId": "backchannel_logout",
        "summary": "OpenID Connect Back-Channel Logout 1.0 (provider to bff)",
        "description": (
            "Validates the signed `logout_token` and ends the sessions of its `sid` (or every session of its "
            "`sub`). No cookie or CSRF header: the token is the credential. Errors also carry `error` and "
            "`error_description` (§2.8)."
        ),
        "security": [],
        "requestBody": {
            "required": True,
            "content": {
                FORM: {
                    "schema": {
                        "type": "object",
                        "required": ["logout_token"],
                        "properties": {"logout_token": {"type": "string", "minLength": 1}},
                    }
                }
            },
        },
        "responses": {
            "200": {"description": "The sessions are ended (empty body)."},
            "400": problem_response(400, "invalid_logout_token"),
            "429": rate_limited("per client address"),
            "502": problem_response(502, "idp_unavailable"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    token_fields = {
        "type": "object",
        "required": ["code", "code_verifier", "redirect_uri"],
        "properties": {
            "code": {"type": "string", "minLength": 1, "maxLength": 2048},
            "code_verifier": {"type": "string", "pattern": "^[A-Za-z0-9._~-]{43,128}$"},
            "redirect_uri": {"type": "string", "minLength": 1, "maxLength": 2048},
        },
    }
    mobile_token = {
        "tags": ["mobile"],
        "operationId": "mobile_token",
        "summary": "Exchange a native app's one-time code for a session token",
        "description": (
            "The one-time code from the app's redirect, the PKCE verifier and the same redirect URI. A failed "
            "exchange burns the code and deletes the session it would have opened."
        ),
        "security": [],
        "requestBody": {"required": True, "content": {FORM: {"schema": token_fields}, JSON: {"schema": token_fields}}},
        "responses": {
            "200": {
                "description": "Use as `Authorization: Session <session_token>`.",
                "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/MobileToken"}}},
            },
            "400": problem_response(400, "invalid_request", "invalid_grant"),
            "403": problem_response(403, "origin_not_allowed"),
            "429": rate_limited("per client address"),
            "503": store_down(),
            "default": default_problem(),
        },
    }
    return {
        "/auth/login": {"get": login},
        "/auth/callback": {"get": callback},
        "/auth/session": {"get": session},
        "/auth/logout": {"post": logout_post, "get": logout_get},
        "/auth/backchannel-logout": {"post": backchannel},
        "/auth/mobile/token": {"post": mobile_token},
    }


def operations_paths() -> dict[str, dict[str, Any]]:
    healthz = {
        "tags": ["operations"],
        "operationId": "healthz",
        "summary": "Liveness: the process answers; touches nothing",
        "security": [],
        "responses": {
            "200": json_response(
                {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "Alive."
            ),
            "default": default_problem(),
        },
    }
    checks = {"type": "object", "additionalProperties": {"type": "string"}}
    readyz = {
        "tags": ["operations"],
        "operationId": "readyz",
        "summary": "Readiness: the session store answers and the provider metadata is loaded",
        "security": [],
        "responses": {
            "200": json_response(
                {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {"status": {"const": "ready"}, "checks": checks},
                },
                "Ready.",
            ),
            "503": problem_response(503, "not_ready"),
            "default": default_problem(),
        },
    }
    return {"/healthz": {"get": healthz}, "/readyz": {"get": readyz}}
