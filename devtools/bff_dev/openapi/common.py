"""Shared pieces of the document: media types, problem responses, parameters, field schemas."""

from __future__ import annotations

import re
from typing import Any

from bff.errors import PROBLEM_JSON
from bff.proxy.routes import Field

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
UPSTREAM_REF = {"$ref": "#/components/schemas/KryptosJson"}
CSRF_REF = {"$ref": "#/components/parameters/XCsrf"}
NO_STORE = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
SESSION_SECURITY: list[dict[str, list[str]]] = [{"sessionCookie": []}, {"sessionToken": []}]
NO_CONTROL_CHARS = "^[^\\u0000-\\u001f\\u007f]*$"
UPSTREAM_NAMES = {"data": "the Kryptos data API", "connect": "the Kryptos connect API"}
STATUS_TEXT = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    429: "Too many requests",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def code_list(codes: tuple[str, ...]) -> str:
    return ", ".join(f"`{c}`" for c in codes)


def problem_response(status: int, *codes: str, upstream: bool = False) -> dict[str, Any]:
    """A response whose body is bff's problem+json (``codes``), or also Kryptos's own JSON (``upstream``)."""
    text = STATUS_TEXT.get(status, "Error")
    description = f"{text}: problem+json from bff ({code_list(codes)})" if codes else f"{text} (from Kryptos)"
    content: dict[str, Any] = {}
    if codes:
        content[PROBLEM_JSON] = {"schema": PROBLEM_REF}
    if upstream:
        content[JSON] = {"schema": UPSTREAM_REF}
        description += "; or Kryptos's own error JSON, passed through" if codes else ", passed through"
    return {"description": description + ".", "content": content}


def default_problem() -> dict[str, Any]:
    return {
        "description": (
            "Any other error, e.g. 431 `request_header_fields_too_large` (more than `BFF_MAX_REQUEST_HEADERS` "
            "headers, a head over `BFF_MAX_HEADER_BYTES` or a cookie over `BFF_MAX_COOKIE_BYTES`), 408 "
            "`request_timeout` (a head not complete within `BFF_HEADER_TIMEOUT`) or 500 `internal_error` "
            "(never a stack trace)."
        ),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }


def store_down(*more: str) -> dict[str, Any]:
    return problem_response(503, "session_store_unavailable", *more)


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}}


def rate_limited(per: str) -> dict[str, Any]:
    """429 ``rate_limited``: this anonymous endpoint's limit per client address (``BFF_RATE_LIMIT_*``)."""
    problem = problem_response(429, "rate_limited")
    problem["description"] = problem["description"].rstrip(".") + f", over the limit {per}."
    return {**problem, "headers": RETRY_AFTER}


def idp_busy() -> dict[str, Any]:
    """503 when the provider's quota is spent (or the provider said 429): the call is not made."""
    return {**store_down("idp_busy"), "headers": RETRY_AFTER}


def redirect(description: str, *, sets_cookie: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "Location": {"description": "Where the browser goes next.", "schema": {"type": "string"}, "required": True}
    }
    if sets_cookie:
        headers["Set-Cookie"] = {"description": "The cookie this step sets or clears.", "schema": {"type": "string"}}
    return {"description": description, "headers": headers}


def json_response(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def query(name: str, schema: dict[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "description": description, "schema": schema}
    if required:
        param["required"] = True
    return param


# --- /api/... from the route table ----------------------------------------------------------------------


def field_schema(spec: Field, *, in_body: bool = False) -> dict[str, Any]:
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
    schema = {"type": "string", "pattern": NO_CONTROL_CHARS}
    if spec.max_length is not None:
        schema["maxLength"] = spec.max_length
    return schema


def operation_id(method: str, path: str) -> str:
    return method.lower() + "_" + "_".join(re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_").split("_"))
