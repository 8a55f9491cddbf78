"""One error tree for the whole service, and its RFC 9457 problem+json rendering.

Every error a client can see is a :class:`BffError` subclass that knows its HTTP status and its stable
machine-readable ``code``. Foreign exceptions (authlib, httpx2, aiohttp, redis) are translated where they
enter, with ``raise ... from exc``, so no handler ever catches a library's exception::

    BffError (500 internal_error)
    ├── BadRequest (400)            invalid_request, invalid_parameter, invalid_return_to, invalid_state, ...
    ├── NotAuthenticated (401)      not_authenticated, session_expired
    ├── Forbidden (403)             csrf_required, origin_not_allowed, forbidden, limit_management_disabled
    ├── NotFound (404) / MethodNotAllowed (405)
    ├── RateLimited (429)           rate_limited
    └── Unavailable (502/503/504)   idp_unavailable, upstream_unavailable, upstream_timeout,
                                    session_store_unavailable, refresh_in_progress, idp_busy

``detail`` is written for the person reading it and never carries a secret, a token or a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from starlette.responses import JSONResponse

from bff import metrics

PROBLEM_JSON = "application/problem+json"


class BffError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.code = code or self.default_code
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{self.code}: {self.detail}")


class BadRequest(BffError):
    status = 400
    default_code = "invalid_request"
    title = "Bad request"


class NotAuthenticated(BffError):
    status = 401
    default_code = "not_authenticated"
    title = "Not authenticated"


class Forbidden(BffError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class NotFound(BffError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class MethodNotAllowed(BffError):
    status = 405
    default_code = "method_not_allowed"
    title = "Method not allowed"


class BadGateway(BffError):
    status = 502
    default_code = "upstream_unavailable"
    title = "Upstream unavailable"


class ServiceUnavailable(BffError):
    status = 503
    default_code = "service_unavailable"
    title = "Service unavailable"


class GatewayTimeout(BffError):
    status = 504
    default_code = "upstream_timeout"
    title = "Upstream timeout"


class SessionStoreUnavailable(ServiceUnavailable):
    default_code = "session_store_unavailable"
    title = "Session store unavailable"


class IdpUnavailable(BadGateway):
    default_code = "idp_unavailable"
    title = "Identity provider unavailable"


class IdpBusy(ServiceUnavailable):
    """The provider's request quota for this client is spent (our budget, or its own 429): try later."""

    default_code = "idp_busy"
    title = "Identity provider busy"


class RateLimited(BffError):
    """Too many requests from one client address (or pending sign-ins of one browser); see ``Retry-After``."""

    status = 429
    default_code = "rate_limited"
    title = "Too many requests"


def session_expired() -> NotAuthenticated:
    """The one answer for "you were signed in, and that session has ended"."""
    return NotAuthenticated("The session has ended; sign in again.", code="session_expired")


_TITLES: dict[int, str] = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    431: "Request header fields too large",
    429: "Too many requests",
    500: "Internal error",
}


def problem(
    status: int,
    code: str,
    detail: str | None = None,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An RFC 9457 response. ``type`` is a stable, dereferenceable-in-docs URN built from ``code``."""
    body: dict[str, Any] = {
        "type": f"urn:bff:problem:{code}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail or title or _TITLES.get(status, "Error"),
        "code": code,
    }
    if extra:
        body.update(extra)
    metrics.errors.labels(code=code).inc()
    merged = {"Cache-Control": "no-store"}
    merged.update(headers or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=merged)


def error_response(exc: BffError) -> JSONResponse:
    return problem(exc.status, exc.code, exc.detail, title=exc.title, headers=exc.headers, extra=exc.extra)
