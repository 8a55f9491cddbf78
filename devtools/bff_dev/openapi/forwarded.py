"""The ``/api/...`` operations, generated from :data:`bff.proxy.routes.ROUTES`."""

from __future__ import annotations

from typing import Any

from bff.errors import PROBLEM_JSON
from bff.proxy.routes import ROUTES, ForwardRoute
from bff_dev.openapi.common import (
    CSRF_REF,
    JSON,
    PROBLEM_REF,
    RETRY_AFTER,
    SESSION_SECURITY,
    UPSTREAM_NAMES,
    UPSTREAM_REF,
    field_schema,
    json_response,
    operation_id,
    problem_response,
    query,
)


def forwarded_operation(route: ForwardRoute) -> dict[str, Any]:
    user_call = route.credentials == "user_token"
    who = "the user's access token and the client credentials" if user_call else "the client credentials only"
    summary = f"{route.method} {route.upstream_path} on {UPSTREAM_NAMES[route.upstream]}"
    description = (
        f"Forwarded to {UPSTREAM_NAMES[route.upstream]} `{route.upstream_path}` with {who}. "
        "Only the validated parameters are forwarded; any other parameter is 400 `invalid_parameter`. "
        "Kryptos's status and JSON pass through unchanged (never its cookies)."
    )
    if route.access == "admin":
        description += " Admin only (`BFF_ADMIN_SUBJECTS`)."
    if user_call:
        description += (
            " The session's credential is its Kryptos Connect grant's token when it has one (never refreshed). "
            "A grant that is gone answers 401 `connect_revoked` (the session lets go of it; a Connect-only "
            "session ends): at once when bff already forgot it (disconnected, revoked by an administrator), "
            "else after an upstream 401 that Kryptos's check-session confirms; when Kryptos says the grant is "
            "still valid (or the check fails) the answer is 502 `connect_failed`. Otherwise the credential is "
            "the OpenID Connect access token: an upstream 401 refreshes it once and retries once."
        )
    if route.grant_facts == "annotate":
        description += (
            " Each grant of the answer gains a `known` object: what earlier transaction-limit answers told bff "
            "(`GrantFacts`)."
        )
    elif route.grant_facts == "learn":
        description += (
            " bff remembers what the answer says of the grant (Guest and its limit, or `NOT_ANON_USER`) for the "
            "grant list's `known` object."
        )

    parameters: list[dict[str, Any]] = [CSRF_REF]
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
        parameters.append(query(spec.name, field_schema(spec), "Given at most once."))

    forbidden = ["csrf_required"] if route.method == "GET" else ["csrf_required", "origin_not_allowed"]
    if route.access == "admin":
        forbidden += ["forbidden", "limit_management_disabled"]
    bad_request = ["invalid_parameter", "invalid_body", "invalid_path"]
    unauthenticated = ["not_authenticated", "session_expired"]
    bad_gateway = ["upstream_unavailable", "idp_unavailable"]
    if user_call:
        unauthenticated.append("connect_revoked")
        bad_gateway.append("connect_failed")
    ok = UPSTREAM_REF if route.grant_facts != "annotate" else {"$ref": "#/components/schemas/GrantList"}
    responses: dict[str, Any] = {
        "200": json_response(ok, "Kryptos's answer, passed through."),
        "400": problem_response(400, *bad_request, upstream=True),
        "401": problem_response(401, *unauthenticated, upstream=route.credentials == "client"),
        "403": problem_response(403, *forbidden, upstream=True),
        "404": problem_response(404, upstream=True),
        "429": {
            **problem_response(429, upstream=True),
            "headers": {"Retry-After": {"description": "Passed through.", "schema": {"type": "string"}}},
        },
        "502": problem_response(502, *bad_gateway, upstream=True),
        "503": {
            **problem_response(503, "session_store_unavailable", "refresh_in_progress", "idp_busy", upstream=True),
            "headers": RETRY_AFTER,
        },
        "504": problem_response(504, "upstream_timeout", upstream=True),
        "default": {
            "description": "Any other status: Kryptos's own JSON passed through, or bff's problem+json.",
            "content": {JSON: {"schema": UPSTREAM_REF}, PROBLEM_JSON: {"schema": PROBLEM_REF}},
        },
    }
    operation: dict[str, Any] = {
        "tags": ["api"],
        "operationId": operation_id(route.method, route.path),
        "summary": summary,
        "description": description,
        "security": SESSION_SECURITY,
        "parameters": parameters,
        "responses": responses,
    }
    if route.body is not None:
        body_schema: dict[str, Any] = {
            "type": "object",
            "properties": {spec.name: field_schema(spec, in_body=True) for spec in route.body},
            "additionalProperties": False,
        }
        if route.body_requires_one:
            body_schema["minProperties"] = 1
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body_schema}}}
    return operation


def forwarded_paths(routes: tuple[ForwardRoute, ...] = ROUTES) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = forwarded_operation(route)
    return paths
