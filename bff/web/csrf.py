"""CSRF defences, applied to every request by :mod:`bff.web.edge` (RFC 10017 §6.1.3.3).

* Calls from the SPA (``/api/...``, ``/connect/...``, ``/auth/session``, ``/auth/sessions…``,
  ``POST /auth/logout``) must carry ``X-CSRF: 1``.
  A custom header cannot be sent cross-origin without a CORS preflight, which this service never grants.
  It is checked on every such request, whatever the method (§6.1.3.3.2).
* State-changing methods must not come from a foreign ``Origin`` (checked against ``BFF_ALLOWED_ORIGINS``).

Server-to-server endpoints (back-channel logout) are exempt: they carry no ambient browser credentials.
So is ``/auth/verify`` itself: the ingress calls it on the browser's behalf, and :mod:`bff.routes.verify`
applies these same rules to the original request's method and path (:meth:`CsrfPolicy.check`).
So is a request carrying ``Authorization: Session <token>`` (native apps, :mod:`bff.routes.mobile`): a browser
never attaches that header on its own, and sending it cross-origin needs a preflight we never grant, so
it is not ambient authority. Such a request is authenticated by the header alone, never by a cookie
(:func:`bff.web.request.current_session`), which is what makes skipping the checks safe.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import Scope

from bff.errors import CsrfRequired, Forbidden, OriginNotAllowed, error_response
from bff.web.request import session_authorization

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXEMPT_PATHS = frozenset({"/auth/backchannel-logout", "/auth/verify"})
_EXEMPT_PREFIX = "/auth/verify/"


def _needs_csrf_header(method: str, path: str) -> bool:
    if path.startswith(("/api/", "/connect/")) or path == "/api":
        return True
    return (
        path in ("/auth/session", "/auth/sessions")
        or path.startswith("/auth/sessions/")
        or (path == "/auth/logout" and method != "GET")
    )


class CsrfPolicy:
    def __init__(self, allowed_origins: Iterable[str]) -> None:
        self.allowed_origins = frozenset(allowed_origins)

    def refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        """The 403 to answer with, or None when the request may proceed."""
        path: str = scope["path"]
        if path in _EXEMPT_PATHS or path.startswith(_EXEMPT_PREFIX):
            return None
        error = self.check(scope["method"], path, headers, scope["headers"])
        return None if error is None else error_response(error)

    def check(
        self, method: str, path: str, headers: dict[bytes, bytes], raw_headers: Iterable[tuple[bytes, bytes]]
    ) -> Forbidden | None:
        """Why a request with this method, path and headers is refused, or None. ``headers`` is the last value
        of each name, ``raw_headers`` every header as sent (for a repeated ``Authorization``)."""
        if b"authorization" in headers:
            authorizations = [v.decode("latin-1") for k, v in raw_headers if k == b"authorization"]
            if session_authorization(authorizations) is not None:
                return None
        origin = headers.get(b"origin")
        if method not in _SAFE_METHODS and origin is not None and origin.decode("latin-1") not in self.allowed_origins:
            return OriginNotAllowed("Requests from this origin are not accepted.")
        if _needs_csrf_header(method, path) and headers.get(b"x-csrf") != b"1":
            return CsrfRequired("Send the header X-CSRF: 1 with every API call.")
        return None
