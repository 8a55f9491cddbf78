"""Per request: the request id, the security headers on the way out, one access line and the HTTP metrics.

Called by :class:`bff.web.edge.EdgeMiddleware` for every request; the line goes through
:func:`bff.logs.write_access`, so it carries only the route template, status, latency, client address,
a short hash of the session, the upstream's status and, when tracing is on, the trace and span ids; never a
query string, token or cookie.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from starlette.types import Scope

from bff import metrics
from bff.logs import access_log, write_access

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer browsers send `Origin: null` on our own POSTs, which
    # the Origin check must then refuse. The callback and login redirects still say no-referrer.
    (b"referrer-policy", b"same-origin"),
]


def request_id_for(headers: dict[bytes, bytes]) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else a fresh one."""
    incoming = headers.get(b"x-request-id", b"").decode("latin-1")
    return incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)


def response_headers(headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    """The response's headers plus the request id and the security headers it does not set itself."""
    present = {k.lower() for k, _ in headers}
    out = [*headers, (b"x-request-id", request_id.encode())]
    out.extend(h for h in _SECURITY_HEADERS if h[0] not in present)
    return out


class RequestRecorder:
    """One access-log line and the HTTP metrics per request.

    The metric children are looked up once per (route, method, status), not per request, and the log
    record is built directly (no caller lookup): this runs on every request.
    """

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def record(self, scope: Scope, status: int, elapsed: float) -> None:
        route_path = getattr(scope.get("route"), "path", None) or "unmatched"
        method: str = scope["method"]
        counter = self._counters.get((route_path, method, status))
        if counter is None:
            counter = metrics.http_requests.labels(route=route_path, method=method, status=str(status))
            self._counters[(route_path, method, status)] = counter
        counter.inc()
        histogram = self._histograms.get((route_path, method))
        if histogram is None:
            histogram = metrics.http_latency.labels(route=route_path, method=method)
            self._histograms[(route_path, method)] = histogram
        histogram.observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            state = scope["state"]
            client = scope.get("client")
            extra = {
                "method": method,
                "route": route_path,
                "status": status,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client[0] if client else None,
                "session_hash": state.get("session_hash"),
                "upstream_status": state.get("upstream_status"),
            }
            if "outcome" in state:  # e.g. client_closed (status 499): said only when there is something to say
                extra["outcome"] = state["outcome"]
            if "trace_id" in state:  # tracing on (bff.tracing): the line names the request's trace and span
                extra["trace_id"] = state["trace_id"]
                extra["span_id"] = state["span_id"]
            write_access(extra)
