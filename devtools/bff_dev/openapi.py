"""bff's own HTTP interface as an OpenAPI 3.1 document (a plain dict), kept in the repo as ``openapi.json``.

The forwarded ``/api/...`` operations are generated from :data:`bff.proxy.routes.ROUTES`, so the document
cannot drift from what the forwarder validates: query parameters with their types and bounds, path
parameters with their patterns, and JSON bodies with exactly the fields accepted (``additionalProperties``
false). The ``/auth/*`` and health operations are written out here from their handlers.

Every error ``bff`` itself produces is ``application/problem+json`` (RFC 9457) with a stable ``code`` and a
``type`` of ``urn:bff:problem:<code>``; forwarded calls may also answer with Kryptos's own JSON and status
(``application/json``), passed through unchanged. ``bff dev`` serves the document at ``/openapi.json``;
``bff serve`` does not. Regenerate the committed copy with::

    python -m bff_dev.openapi > openapi.json
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bff.errors import PROBLEM_JSON
from bff.proxy.routes import ROUTES, Field, ForwardRoute

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_UPSTREAM_REF = {"$ref": "#/components/schemas/KryptosJson"}
_CSRF_REF = {"$ref": "#/components/parameters/XCsrf"}
_SESSION_SECURITY: list[dict[str, list[str]]] = [{"sessionCookie": []}, {"sessionToken": []}]
_NO_CONTROL_CHARS = "^[^\\u0000-\\u001f\\u007f]*$"
_UPSTREAM_NAMES = {"data": "the Kryptos data API", "connect": "the Kryptos connect API"}
_STATUS_TEXT = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def _package_version() -> str:
    try:
        return version("bff")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0"


def _codes(codes: tuple[str, ...]) -> str:
    return ", ".join(f"`{c}`" for c in codes)


def _problem(status: int, *codes: str, upstream: bool = False) -> dict[str, Any]:
    """A response whose body is bff's problem+json (``codes``), or also Kryptos's own JSON (``upstream``)."""
    text = _STATUS_TEXT.get(status, "Error")
    description = f"{text}: problem+json from bff ({_codes(codes)})" if codes else f"{text} (from Kryptos)"
    content: dict[str, Any] = {}
    if codes:
        content[PROBLEM_JSON] = {"schema": _PROBLEM_REF}
    if upstream:
        content[JSON] = {"schema": _UPSTREAM_REF}
        description += "; or Kryptos's own error JSON, passed through" if codes else ", passed through"
    return {"description": description + ".", "content": content}


def _default_problem() -> dict[str, Any]:
    return {
        "description": (
            "Any other error, e.g. 431 `request_header_fields_too_large` (more than `BFF_MAX_REQUEST_HEADERS` "
            "headers, a head over `BFF_MAX_HEADER_BYTES` or a cookie over `BFF_MAX_COOKIE_BYTES`), 408 "
            "`request_timeout` (a head not complete within `BFF_HEADER_TIMEOUT`) or 500 `internal_error` "
            "(never a stack trace)."
        ),
        "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
    }


def _store_down(*more: str) -> dict[str, Any]:
    return _problem(503, "session_store_unavailable", *more)


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}


def _rate_limited(per: str) -> dict[str, Any]:
    """429 ``rate_limited``: this anonymous endpoint's limit per client address (``BFF_RATE_LIMIT_*``)."""
    problem = _problem(429, "rate_limited")
    problem["description"] = problem["description"].rstrip(".") + f", over the limit {per}."
    return {**problem, "headers": _RETRY_AFTER}


def _idp_busy() -> dict[str, Any]:
    """503 when the provider's quota is spent (or the provider said 429): the call is not made."""
    return {**_store_down("idp_busy"), "headers": _RETRY_AFTER}


def _redirect(description: str, *, sets_cookie: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "Location": {"description": "Where the browser goes next.", "schema": {"type": "string"}, "required": True}
    }
    if sets_cookie:
        headers["Set-Cookie"] = {"description": "The cookie this step sets or clears.", "schema": {"type": "string"}}
    return {"description": description, "headers": headers}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "description": description, "schema": schema}
    if required:
        param["required"] = True
    return param


# --- /api/... from the route table ----------------------------------------------------------------------


def _field_schema(spec: Field, *, in_body: bool = False) -> dict[str, Any]:
    """The JSON Schema :func:`bff.proxy.validation._check` enforces for one field."""
    if spec.kind == "int":
        # Stricter than JSON Schema's `integer`, which also admits 350.0: bff refuses any fraction or exponent.
        how = "A JSON number without fraction or exponent (`350`, not `350.0`)" if in_body else "Decimal digits"
        schema: dict[str, Any] = {"type": "integer", "description": how + "."}
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
        return schema
    if spec.kind == "bool":
        return {"type": "boolean"}
    schema = {"type": "string", "pattern": _NO_CONTROL_CHARS}
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    return schema


def _operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + "_".join(re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_").split("_"))


def _forwarded_operation(route: ForwardRoute) -> dict[str, Any]:
    user_call = route.credentials == "user_token"
    who = "the user's access token and the client credentials" if user_call else "the client credentials only"
    summary = f"{route.method} {route.upstream_path} on {_UPSTREAM_NAMES[route.upstream]}"
    description = (
        f"Forwarded to {_UPSTREAM_NAMES[route.upstream]} `{route.upstream_path}` with {who}. "
        "Only the validated parameters are forwarded; any other parameter is 400 `invalid_parameter`. "
        "Kryptos's status and JSON pass through unchanged (never its cookies)."
    )
    if route.access == "admin":
        description += " Admin only (`BFF_ADMIN_SUBJECTS`)."
    if user_call:
        description += " An upstream 401 refreshes the access token once and retries once."

    parameters: list[dict[str, Any]] = [_CSRF_REF]
    for name, pattern in route.path_params.items():
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": "One path segment.",
                "schema": {"type": "string", "pattern": pattern.pattern},
            }
        )
    for spec in route.query:
        parameters.append(_query(spec.name, _field_schema(spec), "Given at most once."))

    forbidden = ["csrf_required"] if route.method == "GET" else ["csrf_required", "origin_not_allowed"]
    if route.access == "admin":
        forbidden += ["forbidden", "limit_management_disabled"]
    bad_request = ["invalid_parameter", "invalid_body", "invalid_path"]
    unauthenticated = ["not_authenticated", "session_expired"]
    responses: dict[str, Any] = {
        "200": _json(_UPSTREAM_REF, "Kryptos's answer, passed through."),
        "400": _problem(400, *bad_request, upstream=True),
        "401": _problem(401, *unauthenticated, upstream=route.credentials == "client"),
        "403": _problem(403, *forbidden, upstream=True),
        "404": _problem(404, upstream=True),
        "429": {
            **_problem(429, upstream=True),
            "headers": {"Retry-After": {"description": "Passed through.", "schema": {"type": "string"}}},
        },
        "502": _problem(502, "upstream_unavailable", "idp_unavailable", upstream=True),
        "503": {
            **_problem(503, "session_store_unavailable", "refresh_in_progress", "idp_busy", upstream=True),
            "headers": _RETRY_AFTER,
        },
        "504": _problem(504, "upstream_timeout", upstream=True),
        "default": {
            "description": "Any other status: Kryptos's own JSON passed through, or bff's problem+json.",
            "content": {JSON: {"schema": _UPSTREAM_REF}, PROBLEM_JSON: {"schema": _PROBLEM_REF}},
        },
    }
    operation: dict[str, Any] = {
        "tags": ["api"],
        "operationId": _operation_id(route.method, route.path),
        "summary": summary,
        "description": description,
        "security": _SESSION_SECURITY,
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        body_schema: dict[str, Any] = {
            "type": "object",
            "properties": {spec.name: _field_schema(spec, in_body=True) for spec in route.body},
            "additionalProperties": False,
        }
        if route.body_requires_one:
            body_schema["minProperties"] = 1
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schema}}}
    return operation


def forwarded_paths(routes: tuple[ForwardRoute, ...] = ROUTES) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _forwarded_operation(route)
    return paths


# --- /auth/... and operations ---------------------------------------------------------------------------

_LOGIN_PARAMETERS: list[dict[str, Any]] = [
    _query(
        "return_to",
        {"type": "string", "maxLength": 512, "pattern": "^/(?![/\\\\])[^\\\\\\u0000-\\u001f\\u007f]*$"},
        "Local path to return to after sign-in (default `/`): starts with one `/`, no backslash, no control "
        "characters, also once percent-decoded; else 400 `invalid_return_to`.",
    ),
    _query(
        "login_hint",
        {"type": "string", "pattern": "^[A-Za-z0-9_.@+-]{1,128}$"},
        "Passed to the provider; letters, digits, `_ . @ + -`, 1 to 128 characters.",
    ),
    _query(
        "prompt",
        {"type": "string", "enum": ["login", "consent", "select_account", "none"]},
        "Passed to the provider.",
    ),
    _query(
        "client",
        {"type": "string", "enum": ["web", "mobile"]},
        "`mobile` starts a native app's sign-in (the parameters below); default `web`.",
    ),
    _query(
        "redirect_uri",
        {"type": "string"},
        "client=mobile: exactly one of `BFF_MOBILE_REDIRECT_URIS` (else 400 `invalid_redirect_uri`).",
    ),
    _query(
        "code_challenge",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"},
        "client=mobile: BASE64URL(SHA-256(code_verifier)), unpadded.",
    ),
    _query("code_challenge_method", {"type": "string", "enum": ["S256"]}, "client=mobile: `S256` only."),
    _query(
        "state",
        {"type": "string", "minLength": 1, "maxLength": 512, "pattern": "^[ -~]+$"},
        "client=mobile: the app's state, returned on its redirect; printable ASCII.",
    ),
]


def _auth_paths() -> dict[str, dict[str, Any]]:
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
            "302": _redirect("To the provider's authorization endpoint.", sets_cookie=True),
            "400": _problem(
                400,
                "invalid_return_to",
                "invalid_parameter",
                "mobile_disabled",
                "invalid_redirect_uri",
                "invalid_request",
            ),
            "429": _rate_limited("per client address, or of sign-ins pending in this browser"),
            "502": _problem(502, "idp_unavailable"),
            "503": _store_down(),
            "default": _default_problem(),
        },
    }
    callback = {
        "tags": ["auth"],
        "operationId": "callback",
        "summary": "The provider's redirect back (browser navigation)",
        "description": (
            "Checks `state` (single use), the browser binding cookie and `iss` (RFC 9207), exchanges the code, "
            "validates the ID token and creates a new session. Provider errors go back to the SPA as "
            "`/?login_error=<code>` (or to a native app's redirect URI as `error=`)."
        ),
        "security": [],
        "parameters": [
            _query("state", {"type": "string"}, "The state bff sent to the provider."),
            _query("code", {"type": "string"}, "The authorization code."),
            _query("iss", {"type": "string"}, "The issuer that answered (RFC 9207)."),
            _query("error", {"type": "string"}, "The provider's error code, if sign-in failed."),
        ],
        "responses": {
            "302": _redirect(
                "Signed in: to `return_to` with the session cookie set (or, for a native app, to its redirect "
                "URI with a one-time `code`); or to `/?login_error=<code>`.",
                sets_cookie=True,
            ),
            "400": _problem(
                400,
                "invalid_state",
                "login_binding_mismatch",
                "issuer_mismatch",
                "invalid_request",
                "login_failed",
                "invalid_id_token",
            ),
            "429": _rate_limited("per client address"),
            "502": _problem(502, "idp_unavailable"),
            "503": _idp_busy(),
            "default": _default_problem(),
        },
    }
    session = {
        "tags": ["auth"],
        "operationId": "session",
        "summary": "Who is signed in (no upstream call)",
        "security": _SESSION_SECURITY,
        "parameters": [_CSRF_REF],
        "responses": {
            "200": {
                "description": "The signed-in user.",
                "headers": {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}},
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/SessionInfo"}}},
            },
            "401": _problem(401, "not_authenticated", "session_expired"),
            "403": _problem(403, "csrf_required"),
            "503": _store_down(),
            "default": _default_problem(),
        },
    }
    logout_post = {
        "tags": ["auth"],
        "operationId": "logout",
        "summary": "Sign out (SPA or native app)",
        "description": (
            "Revokes the refresh and access tokens at the provider (RFC 7009), deletes the session and clears "
            "the cookie. Without a session it only clears the cookie (`logout_url` null)."
        ),
        "security": [*_SESSION_SECURITY, {}],
        "parameters": [_CSRF_REF],
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["logout_url"],
                    "properties": {"logout_url": {"type": ["string", "null"]}},
                },
                "Signed out; `logout_url` is the provider's end-session URL, when it has one.",
            ),
            "403": _problem(403, "csrf_required", "origin_not_allowed"),
            "503": _store_down(),
            "default": _default_problem(),
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
        "parameters": [_query("sid", {"type": "string"}, "The session's logout id.")],
        "responses": {
            "302": _redirect("To the provider's end-session endpoint, or to `/`.", sets_cookie=True),
            "400": _problem(400, "invalid_logout_request"),
            "503": _store_down(),
            "default": _default_problem(),
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
            "400": _problem(400, "invalid_logout_token"),
            "429": _rate_limited("per client address"),
            "502": _problem(502, "idp_unavailable"),
            "503": _store_down(),
            "default": _default_problem(),
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
            "400": _problem(400, "invalid_request", "invalid_grant"),
            "403": _problem(403, "origin_not_allowed"),
            "429": _rate_limited("per client address"),
            "503": _store_down(),
            "default": _default_problem(),
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


def _operations_paths() -> dict[str, dict[str, Any]]:
    healthz = {
        "tags": ["operations"],
        "operationId": "healthz",
        "summary": "Liveness: the process answers; touches nothing",
        "security": [],
        "responses": {
            "200": _json(
                {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}, "Alive."
            ),
            "default": _default_problem(),
        },
    }
    checks = {"type": "object", "additionalProperties": {"type": "string"}}
    readyz = {
        "tags": ["operations"],
        "operationId": "readyz",
        "summary": "Readiness: the session store answers and the provider metadata is loaded",
        "security": [],
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["status", "checks"],
                    "properties": {"status": {"const": "ready"}, "checks": checks},
                },
                "Ready.",
            ),
            "503": _problem(503, "not_ready"),
            "default": _default_problem(),
        },
    }
    return {"/healthz": {"get": healthz}, "/readyz": {"get": readyz}}


def _components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "sessionCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "__Host-bff-session",
                "description": (
                    "The SPA's signed, opaque session cookie (`HttpOnly`, `SameSite=Lax`). Named "
                    "`bff-session` on plain-http dev; `BFF_COOKIE_NAME` overrides. Calls authenticated by it "
                    "need `X-CSRF: 1`, and state-changing ones a same-origin (or no) `Origin`."
                ),
            },
            "sessionToken": {
                "type": "http",
                "scheme": "Session",
                "description": (
                    "Native apps: `Authorization: Session <session_token>` from `POST /auth/mobile/token`. "
                    "With it no cookie is read and no `X-CSRF` header is needed."
                ),
            },
        },
        "parameters": {
            "XCsrf": {
                "name": "X-CSRF",
                "in": "header",
                "required": True,
                "description": (
                    "Required on cookie-authenticated calls from the SPA (else 403 `csrf_required`); not needed "
                    "with `Authorization: Session`."
                ),
                "schema": {"type": "string", "enum": ["1"]},
            }
        },
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details, as every error from bff itself.",
                "required": ["type", "title", "status", "detail", "code"],
                "properties": {
                    "type": {"type": "string", "pattern": "^urn:bff:problem:[a-z_]+$"},
                    "title": {"type": "string"},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string"},
                    "code": {"type": "string", "description": "Stable and machine-readable."},
                },
                "additionalProperties": True,
            },
            "KryptosJson": {
                "description": "Kryptos's own JSON, passed through unchanged (loosely typed here).",
            },
            "SessionInfo": {
                "type": "object",
                "required": [
                    "authenticated",
                    "user",
                    "scopes",
                    "expires_at",
                    "expires_in",
                    "absolute_expires_at",
                    "logout_url",
                    "is_admin",
                ],
                "properties": {
                    "authenticated": {"const": True},
                    "user": {
                        "type": "object",
                        "required": ["sub"],
                        "properties": {
                            "sub": {"type": "string"},
                            "name": {"type": "string"},
                            "email": {"type": "string"},
                            "email_verified": {"type": "boolean"},
                            "preferred_username": {"type": "string"},
                            "picture": {"type": "string"},
                            "locale": {"type": "string"},
                            "language": {"type": "string"},
                        },
                    },
                    "scopes": {"type": "array", "items": {"type": "string"}},
                    "expires_at": {"type": "integer", "description": "Unix time the session ends if left idle."},
                    "expires_in": {"type": "integer", "minimum": 0},
                    "absolute_expires_at": {"type": "integer"},
                    "logout_url": {"type": "string", "description": "`/auth/logout?sid=…` (navigation logout)."},
                    "is_admin": {"type": "boolean"},
                },
            },
            "MobileToken": {
                "type": "object",
                "required": ["session_token", "expires_in", "token_type"],
                "properties": {
                    "session_token": {"type": "string"},
                    "expires_in": {"type": "integer", "minimum": 0, "description": "The idle timeout, seconds."},
                    "token_type": {"const": "Session"},
                },
            },
        },
    }


def build_document(routes: tuple[ForwardRoute, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document of bff's own endpoints (a fresh dict each call)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "bff",
            "version": _package_version(),
            "summary": "OAuth 2.0 / OpenID Connect backend-for-frontend for the Kryptos Connect API.",
            "description": (
                "Every error from bff is `application/problem+json` (RFC 9457) with a stable `code` and a "
                "`type` of `urn:bff:problem:<code>`. Forwarded `/api/...` calls pass Kryptos's status and JSON "
                "through (`application/json`). Any other `/api/...` path is 404 `not_found`, any other method "
                "405 `method_not_allowed`; non-canonical paths are 400 `invalid_path`. `/metrics` is served "
                "on `BFF_METRICS_PORT` only and is not described here."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "auth", "description": "Sign-in, session and logout."},
            {"name": "mobile", "description": "Native apps (RFC 8252)."},
            {"name": "api", "description": "Kryptos calls forwarded from the route table."},
            {"name": "operations", "description": "Liveness and readiness."},
        ],
        "paths": {**_auth_paths(), **forwarded_paths(routes), **_operations_paths()},
        "components": _components(),
    }


def render(document: dict[str, Any] | None = None) -> str:
    """The document as committed in ``openapi.json``: two-space indent, trailing newline."""
    return json.dumps(build_document() if document is None else document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
