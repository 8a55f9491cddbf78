"""Validation of what the SPA sends, against a :class:`~bff.proxy.routes.ForwardRoute`.

Only validated values are forwarded: the upstream query string and JSON body are rebuilt from them, never
copied from the request, so parameter pollution and smuggled fields cannot reach Kryptos.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams

from bff.errors import BadRequest
from bff.proxy.routes import Field, ForwardRoute

MAX_BODY_BYTES = 16 * 1024
_INT = re.compile(r"^(0|[1-9][0-9]{0,15})$")


def invalid_parameter(name: str, detail: str) -> BadRequest:
    """400 ``invalid_parameter`` naming the parameter (every route's refusal of a bad value)."""
    return BadRequest(f"{name}: {detail}", code="invalid_parameter", extra={"parameter": name})


def _check(spec: Field, value: Any, *, from_query: bool) -> Any:
    if spec.kind == "int":
        if from_query:
            if not isinstance(value, str) or not _INT.fullmatch(value):
                raise invalid_parameter(spec.name, "must be a whole number")
            value = int(value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise invalid_parameter(spec.name, "must be a whole number")
        if spec.minimum is not None and value < spec.minimum:
            raise invalid_parameter(spec.name, f"must be at least {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            raise invalid_parameter(spec.name, f"must be at most {spec.maximum}")
        return value
    if spec.kind == "bool":
        if from_query:
            if value not in ("true", "false"):
                raise invalid_parameter(spec.name, "must be true or false")
            return value == "true"
        if not isinstance(value, bool):
            raise invalid_parameter(spec.name, "must be true or false")
        return value
    if not isinstance(value, str):
        raise invalid_parameter(spec.name, "must be a string")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise invalid_parameter(spec.name, f"must be at most {spec.max_length} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise invalid_parameter(spec.name, "must not contain control characters")
    return value


def validate_query(route: ForwardRoute, query: QueryParams) -> dict[str, str]:
    allowed = {f.name: f for f in route.query}
    out: dict[str, str] = {}
    for name in query:
        spec = allowed.get(name)
        if spec is None:
            raise invalid_parameter(name, "is not accepted by this endpoint")
        values = query.getlist(name)
        if len(values) != 1:
            raise invalid_parameter(name, "must be given once")
        value = _check(spec, values[0], from_query=True)
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


_QUERIES_KEPT = 1024
_QUERY_KEPT_LENGTH = 512  # longer query strings are validated every time, so the table stays under ~1 MiB
_queries: dict[tuple[str, str, str], str] = {}


def upstream_query(route: ForwardRoute, raw: str) -> str:
    """The query to send upstream for the query string ``raw`` (as sent): :func:`validate_query`'s values,
    encoded again (``""`` when there are none); 400 ``invalid_parameter`` as there.

    The same bytes always validate to the same query, and an SPA asks the same few again and again (page 1, 25
    per page), so the answers are kept per process: at most ``_QUERIES_KEPT`` query strings of at most
    ``_QUERY_KEPT_LENGTH`` characters, all forgotten when full (a client sending endless new or long queries costs a
    table that never grows past the bound). Refusals are not kept."""
    key = (route.method, route.path, raw)
    found = _queries.get(key)
    if found is None:
        query = validate_query(route, QueryParams(raw))
        found = urlencode(query) if query else ""
        if len(raw) <= _QUERY_KEPT_LENGTH:
            if len(_queries) >= _QUERIES_KEPT:
                _queries.clear()
            _queries[key] = found
    return found


def validate_path(route: ForwardRoute, params: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, pattern in route.path_params.items():
        value = params.get(name)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise invalid_parameter(name, "is not a valid identifier")
        out[name] = value
    return out


def json_object(media_type: str, raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400 ``invalid_body`` (not ``application/json``, not JSON, not an object)."""
    if media_type != "application/json":
        raise BadRequest("Send the body as application/json.", code="invalid_body")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("The request body is not valid JSON.", code="invalid_body") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_body")
    return data


def validate_body(route: ForwardRoute, media_type: str, raw: bytes) -> bytes | None:
    """The JSON body to forward, rebuilt from validated fields; ``media_type`` is the request's, without
    parameters (:func:`bff.web.request.media_type`)."""
    if route.body is None:
        if raw:
            raise BadRequest("This endpoint takes no request body.", code="invalid_body")
        return None
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("The request body is too large.", code="invalid_body")
    data = json_object(media_type, raw)
    allowed = {f.name: f for f in route.body}
    clean: dict[str, Any] = {}
    for name, value in data.items():
        spec = allowed.get(name)
        if spec is None:
            raise invalid_parameter(name, "is not accepted by this endpoint")
        clean[name] = _check(spec, value, from_query=False)
    if route.body_requires_one and not clean:
        names = " or ".join(f.name for f in route.body)
        raise BadRequest(f"Send at least one of {names}.", code="invalid_parameter")
    return json.dumps(clean, separators=(",", ":")).encode()
