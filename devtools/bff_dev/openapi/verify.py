"""``/auth/verify``, the ingress's external authorization, written out from :mod:`bff.routes.verify`.

The handler answers every method in :data:`bff.routes.verify.METHODS` alike, at ``/auth/verify`` (the
original request named in headers) and at ``/auth/verify/{original}`` (Envoy's ``path_prefix``: the original
path appended), so the operations are made by one function, per path and method.
"""

from __future__ import annotations

from typing import Any

from bff.routes.verify import METHODS, PREFIX
from bff_dev.openapi.common import (
    RETRY_AFTER,
    SESSION_SECURITY,
    default_problem,
    problem_response,
)

TAG = "external-authorization"
PREFIXED = PREFIX + "/{original}"
_ORIGIN_FORM = "^/[!-~]*$"  # what bff.routes.verify._original accepts: "/" then printable ASCII, no space
_METHOD = "^[A-Za-z]{1,16}$"


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "description": description, "schema": schema}


_HEADERS: list[dict[str, Any]] = [
    _header(
        "X-Original-Method",
        {"type": "string", "pattern": _METHOD},
        "nginx (`auth_request`, ingress-nginx): the original request's method. Else `X-Forwarded-Method`, else "
        "this request's own method.",
    ),
    _header(
        "X-Original-URI",
        {"type": "string", "pattern": _ORIGIN_FORM},
        "nginx: the original request target, path and query (origin-form: `/`, then printable ASCII without "
        "spaces, else 403 `original_request_unknown`). Else `X-Forwarded-Uri`. Either one wins over a path "
        "appended to this endpoint's.",
    ),
    _header("X-Forwarded-Method", {"type": "string", "pattern": _METHOD}, "Traefik, Caddy: the original method."),
    _header(
        "X-Forwarded-Uri",
        {"type": "string", "pattern": _ORIGIN_FORM},
        "Traefik, Caddy: the original request target, path and query.",
    ),
    _header(
        "X-CSRF",
        {"type": "string", "enum": ["1"]},
        "The original request's: required, as on the proxy, when it is authenticated by the session cookie and "
        "its path needs it (`/api/...`; else 403 `csrf_required`).",
    ),
    _header(
        "Origin",
        {"type": "string"},
        "The original request's: a state-changing method from an origin not in `BFF_ALLOWED_ORIGINS` is 403 "
        "`origin_not_allowed` (not checked with `Authorization: Session`).",
    ),
]

_ORIGINAL = {
    "name": "original",
    "in": "path",
    "required": True,
    "description": (
        "The original request's path without its leading `/`, slashes and all (`api/v1/integrations`), as "
        "Envoy's `ext_authz` appends it with `path_prefix: /auth/verify`; this request's query string is the "
        "original's. The path is sent as is, its `/` not percent-encoded: an encoded slash, an empty segment or "
        "a dot segment is 400 `invalid_path`. Used only when neither `X-Original-URI` nor `X-Forwarded-Uri` is "
        "sent."
    ),
    "schema": {"type": "string"},
}

_OK_HEADERS: dict[str, Any] = {
    "Authorization": {
        "description": (
            "`Bearer <token>`, only when the original request's route calls Kryptos with the user's token: the "
            "session's Kryptos Connect grant's token when it has one (never refreshed), else its OpenID Connect "
            "access token, refreshed first when due. For the ingress to set on the upstream request."
        ),
        "schema": {"type": "string", "pattern": "^Bearer .+$"},
    },
    "X-Client-Id": {
        "description": "`BFF_CLIENT_ID`, for the upstream request.",
        "schema": {"type": "string"},
        "required": True,
    },
    "X-Client-Secret": {
        "description": "`BFF_CLIENT_SECRET`, for the upstream request; never to be passed back to the browser.",
        "schema": {"type": "string"},
        "required": True,
    },
    "Cache-Control": {"schema": {"type": "string", "const": "no-store"}, "required": True},
}

_DESCRIPTION = (
    "For the ingress only (nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth`, Envoy "
    "`ext_authz`): asked before each original request, with that request's headers, it answers 200 with the "
    "headers the upstream needs, for the ingress to copy onto the original request, or refuses it. Only a peer "
    "in `BFF_TRUSTED_PROXIES` (the TCP peer itself) may ask, since the answer carries the client secret: anyone "
    "else gets 403 `untrusted_caller`. The original request is the one `X-Original-Method` / `X-Original-URI` "
    "(nginx) or `X-Forwarded-Method` / `X-Forwarded-Uri` (Traefik, Caddy) name, else this request's method and "
    "the path appended to `/auth/verify/` (Envoy). It is judged as the proxy judges a `/api/...` call, in the "
    "proxy's order: canonical path, `X-CSRF` and `Origin`, the route table (anything not in it is 403 "
    "`route_not_allowed`), the session (its cookie or `Authorization: Session`, as the original request "
    "carried them), administrator-only routes, path and query parameters. Every refusal of the original request "
    "is 401 or 403 (nginx turns any other status into a 500): a query parameter the proxy would answer 400 "
    "`invalid_parameter` is 403 `invalid_parameter` here (only a non-canonical path appended to this one is "
    "refused earlier, 400 `invalid_path`, by the path guard every request passes). Kryptos is never called and "
    "no request body is read: the original request's body is not checked, and an upstream 401 is not retried "
    "with a refreshed token. The provider is called only to refresh a due access token (under the session's "
    "refresh lock, as for the proxy)."
)


def _unauthenticated() -> dict[str, Any]:
    response = problem_response(401, "not_authenticated", "session_expired", "connect_revoked")
    response["description"] = response["description"].rstrip(".") + (
        "; `session_expired` also when the provider refuses the refresh of a due access token, "
        "`connect_revoked` when the session's Kryptos Connect grant is gone (the session lets go of it; a "
        "Connect-only session ends)."
    )
    return response


def verify_operation(method: str, *, prefixed: bool) -> dict[str, Any]:
    """The operation of one method at ``/auth/verify`` or, ``prefixed``, at ``/auth/verify/{original}``."""
    responses: dict[str, Any] = {
        "200": {"description": "The original request may go ahead (empty body).", "headers": _OK_HEADERS},
    }
    if prefixed:
        # The edge's path guard sees the appended path before the handler does (bff.web.edge.path_refusal).
        guard = problem_response(400, "invalid_path")
        guard["description"] = guard["description"].rstrip(".") + (
            ": the appended original path is not canonical, refused before this endpoint is reached."
        )
        responses["400"] = guard
    responses |= {
        "401": _unauthenticated(),
        "403": problem_response(
            403,
            "untrusted_caller",
            "original_request_unknown",
            "invalid_path",
            "csrf_required",
            "origin_not_allowed",
            "route_not_allowed",
            "forbidden",
            "limit_management_disabled",
            "invalid_parameter",
        ),
        "502": problem_response(502, "idp_unavailable"),
        "503": {
            **problem_response(503, "session_store_unavailable", "refresh_in_progress", "idp_busy"),
            "headers": RETRY_AFTER,
        },
        "default": default_problem(),
    }
    where = "its path appended, Envoy" if prefixed else "named in headers"
    return {
        "tags": [TAG],
        "operationId": f"verify_{method.lower()}" + ("_path_prefix" if prefixed else ""),
        "summary": f"{method}: authorize the ingress's original request ({where})",
        "description": _DESCRIPTION,
        "security": SESSION_SECURITY,
        "parameters": [_ORIGINAL, *_HEADERS] if prefixed else list(_HEADERS),
        "responses": responses,
    }


def verify_paths() -> dict[str, dict[str, Any]]:
    return {
        path: {method.lower(): verify_operation(method, prefixed=prefixed) for method in METHODS}
        for path, prefixed in ((PREFIX, False), (PREFIXED, True))
    }
