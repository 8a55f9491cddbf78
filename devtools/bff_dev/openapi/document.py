"""The whole document: paths, components, and its rendering as committed ``openapi.json``."""

from __future__ import annotations

import json
import sys
from typing import Any

from bff import __version__
from bff.proxy.routes import ROUTES, ForwardRoute
from bff_dev.openapi.auth import auth_paths, operations_paths
from bff_dev.openapi.common import OPENAPI_VERSION
from bff_dev.openapi.connect import connect_paths, connect_schemas, grant_admin_paths
from bff_dev.openapi.forwarded import forwarded_paths
from bff_dev.openapi.sessions import TAG as SESSIONS_TAG
from bff_dev.openapi.sessions import admin_sessions_paths, sessions_paths, sessions_schemas
from bff_dev.openapi.verify import TAG as VERIFY_TAG
from bff_dev.openapi.verify import verify_paths


def components() -> dict[str, Any]:
    return {
        "securitySchemes": {
            "sessionCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "__Host-bff-session",
                "description": (
                    "The SPA's signed, opaque session cookie (`HttpOnly`, `SameSite=Lax`). Named "
                    "`bff-session` on plain-http dev; `BFF_COOKIE_NAME` overrides. Set by the sign-in, and by "
                    "`/connect/*` for a browser that connects without a session (a Connect-only session: no "
                    "one is signed in, `/auth/session` answers 401). Calls authenticated by it need "
                    "`X-CSRF: 1`, and state-changing ones a same-origin (or no) `Origin`."
                ),
            },
            "connectCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "__Host-bff-connect",
                "description": (
                    "The browser's grant cookie: a signed reference to the Kryptos Connect grant bff holds "
                    "(never the token, never the grant id). `HttpOnly`, `SameSite=Strict`, `Path=/`, lifetime "
                    "`BFF_CONNECT_IDLE_TIMEOUT` (at most 400 days); named `bff-connect` on plain-http dev. Set by "
                    "`POST /connect/exchange` and a connected `GET /connect/status`, cleared by "
                    "`POST /connect/disconnect`; read by `/connect/*` only, so the grant outlives the session. "
                    "A grant bound to a signed-in user serves only that user's sessions, whoever holds the cookie."
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
            **connect_schemas(),
            **sessions_schemas(),
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
            "version": __version__,
            "summary": "OAuth 2.0 / OpenID Connect backend-for-frontend for the Kryptos Connect API.",
            "description": (
                "Every error from bff is `application/problem+json` (RFC 9457) with a stable `code` and a "
                "`type` of `urn:bff:problem:<code>`. `/connect/*` drives the Kryptos Connect widget; the grant "
                "it leaves is held by bff and used for the data calls. Forwarded `/api/...` calls pass Kryptos's "
                "status and JSON through (`application/json`). Any other `/api/...` path is 404 `not_found`, "
                "any other method 405 `method_not_allowed`; non-canonical paths are 400 `invalid_path`. "
                "`/metrics` is served on `BFF_METRICS_PORT` only and is not described here."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "auth", "description": "Sign-in, session and logout."},
            {
                "name": SESSIONS_TAG,
                "description": (
                    'A user\'s sessions ("Your devices"): list them, end one or all the others; and an '
                    "administrator's force sign-out of any user."
                ),
            },
            {"name": "mobile", "description": "Native apps (RFC 8252)."},
            {"name": "connect", "description": "The Kryptos Connect widget (Guests) and grant revocation."},
            {"name": "api", "description": "Kryptos calls forwarded from the route table."},
            {
                "name": VERIFY_TAG,
                "description": (
                    "`/auth/verify`: the ingress asks whether an API call it carries itself may go ahead, and "
                    "with which credentials."
                ),
            },
            {"name": "operations", "description": "Liveness and readiness."},
        ],
        "paths": {
            **auth_paths(),
            **sessions_paths(),
            **verify_paths(),
            **connect_paths(),
            **forwarded_paths(routes),
            **grant_admin_paths(),
            **admin_sessions_paths(),
            **operations_paths(),
        },
        "components": components(),
    }


def render(document: dict[str, Any] | None = None) -> str:
    """The document as committed in ``openapi.json``: two-space indent, trailing newline."""
    return json.dumps(build_document() if document is None else document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
