"""One error tree for the whole service, and its one RFC 9457 problem+json rendering.

Every error a client can see is a :class:`BffError` subclass that knows its HTTP status, its title and its
stable machine-readable ``code``. Foreign exceptions (authlib, httpx2, redis, bff.services.http1's) are
translated where they enter, with ``raise ... from exc``, so no handler ever catches a library's exception;
refusals made before routing (the edge middleware, the HTTP protocol) render the same classes the same way::

    BffError (500 internal_error)
    ├── BadRequest (400)              invalid_request, invalid_parameter, invalid_body, invalid_path,
    │   │                             invalid_return_to, invalid_state, login_binding_mismatch, issuer_mismatch,
    │   │                             login_failed, invalid_grant, invalid_redirect_uri, mobile_disabled,
    │   │                             invalid_logout_request, public_token_used, public_token_expired,
    │   │                             invalid_public_token
    │   ├── InvalidIdToken            invalid_id_token
    │   └── InvalidLogoutToken        invalid_logout_token (with the OAuth ``error`` member)
    ├── NotAuthenticated (401)        not_authenticated, session_expired, connect_revoked
    ├── TokenRejected (401)           token_rejected: the provider refused a grant; callers translate it
    ├── Forbidden (403)               forbidden, limit_management_disabled; from /auth/verify also
    │   │                             untrusted_caller, route_not_allowed, original_request_unknown, and
    │   │                             what the proxy answers 400 (invalid_parameter, invalid_path)
    │   ├── CsrfRequired              csrf_required
    │   └── OriginNotAllowed          origin_not_allowed
    ├── NotFound (404)                not_found, session_not_found
    ├── MethodNotAllowed (405)        method_not_allowed
    ├── RequestTimeout (408)          request_timeout
    ├── RateLimited (429)             rate_limited
    ├── HeaderFieldsTooLarge (431)    request_header_fields_too_large
    ├── BadGateway (502)              upstream_unavailable, connect_failed
    │   └── IdpUnavailable            idp_unavailable
    ├── ServiceUnavailable (503)      service_unavailable, refresh_in_progress, connect_busy
    │   ├── SessionStoreUnavailable   session_store_unavailable
    │   ├── IdpBusy                   idp_busy
    │   └── NotReady                  not_ready
    └── GatewayTimeout (504)          upstream_timeout

``detail`` is written for the person reading it and never carries a secret, a token or a stack trace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

from starlette.responses import Response

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


class InvalidIdToken(BadRequest):
    default_code = "invalid_id_token"
    title = "The ID token is not valid"


class InvalidLogoutToken(BadRequest):
    default_code = "invalid_logout_token"
    title = "The logout token is not valid"

    def __init__(self, detail: str) -> None:
        # Back-Channel Logout 1.0 §2.8: the sender looks for an OAuth `error` member in the 400.
        super().__init__(detail, extra={"error": "invalid_request", "error_description": detail})


class NotAuthenticated(BffError):
    status = 401
    default_code = "not_authenticated"
    title = "Not authenticated"


class TokenRejected(BffError):
    """The provider refused a grant (RFC 6749 §5.2). ``error`` is the provider's code, e.g. invalid_grant.

    Never shown as is: the sign-in answers 400 ``login_failed``, a refresh 401 ``session_expired`` or 502
    ``idp_unavailable`` (:mod:`bff.services.tokens`)."""

    status = 401
    default_code = "token_rejected"
    title = "The identity provider refused the request"

    def __init__(self, error: str) -> None:
        self.error = error
        super().__init__(f"The identity provider answered {error!r}.")


class Forbidden(BffError):
    status = 403
    default_code = "forbidden"
    title = "Forbidden"


class CsrfRequired(Forbidden):
    default_code = "csrf_required"
    title = "CSRF header required"


class OriginNotAllowed(Forbidden):
    default_code = "origin_not_allowed"
    title = "Origin not allowed"


class NotFound(BffError):
    status = 404
    default_code = "not_found"
    title = "Not found"


class MethodNotAllowed(BffError):
    status = 405
    default_code = "method_not_allowed"
    title = "Method not allowed"


class RequestTimeout(BffError):
    """The request head did not arrive in time (``BFF_HEADER_TIMEOUT``, :mod:`bff.web.protocol`)."""

    status = 408
    default_code = "request_timeout"
    title = "Request Timeout"


class RateLimited(BffError):
    """Too many requests from one client address (or pending sign-ins of one browser); see ``Retry-After``."""

    status = 429
    default_code = "rate_limited"
    title = "Too many requests"


class HeaderFieldsTooLarge(BffError):
    """Over ``BFF_MAX_REQUEST_HEADERS``, ``BFF_MAX_HEADER_BYTES`` or ``BFF_MAX_COOKIE_BYTES``."""

    status = 431
    default_code = "request_header_fields_too_large"
    title = "Request Header Fields Too Large"


class BadGateway(BffError):
    status = 502
    default_code = "upstream_unavailable"
    title = "Upstream unavailable"


class IdpUnavailable(BadGateway):
    default_code = "idp_unavailable"
    title = "Identity provider unavailable"


class ServiceUnavailable(BffError):
    status = 503
    default_code = "service_unavailable"
    title = "Service unavailable"


class SessionStoreUnavailable(ServiceUnavailable):
    default_code = "session_store_unavailable"
    title = "Session store unavailable"


class IdpBusy(ServiceUnavailable):
    """The provider's request quota for this client is spent (our budget, or its own 429): try later."""

    default_code = "idp_busy"
    title = "Identity provider busy"


class NotReady(ServiceUnavailable):
    """``/readyz``: Redis does not answer or the provider's metadata is not loaded yet."""

    default_code = "not_ready"
    title = "Not ready"


class GatewayTimeout(BffError):
    status = 504
    default_code = "upstream_timeout"
    title = "Upstream timeout"


def session_expired() -> NotAuthenticated:
    """The one answer for "you were signed in, and that session has ended"."""
    return NotAuthenticated("The session has ended; sign in again.", code="session_expired")


def connect_revoked() -> NotAuthenticated:
    """The one answer for "the Kryptos Connect grant this browser used is gone" (disconnected here, revoked
    by an administrator or at Kryptos): connect again."""
    return NotAuthenticated("The Kryptos connection was revoked; connect your accounts again.", code="connect_revoked")


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, at least 1 (RFC 9110 §10.2.3)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def problem_body(exc: BffError) -> bytes:
    """The RFC 9457 document of ``exc`` (``type`` is a stable URN built from ``code``), counted in
    ``bff_errors_total``."""
    body: dict[str, Any] = {
        "type": f"urn:bff:problem:{exc.code}",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "code": exc.code,
        **exc.extra,
    }
    metrics.errors.labels(code=exc.code).inc()
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def error_response(exc: BffError) -> Response:
    headers = {"Cache-Control": "no-store", **exc.headers}
    return Response(problem_body(exc), status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)
