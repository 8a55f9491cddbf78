"""The one ASGI layer every request passes before routing, in this order:

1. forwarded headers, believed only from trusted proxies (:mod:`bff.web.forwarded`);
2. the request id (and the client address the audit trail names, :mod:`bff.audit`), the security headers
   on the way out, one access-log line and the HTTP metrics (:mod:`bff.logs`), and the request's trace span
   when tracing is on (:mod:`bff.tracing`);
3. the path guard: non-canonical paths are refused before any routing (:func:`path_refusal`);
4. the CSRF header and ``Origin`` checks (:mod:`bff.web.csrf`);
5. the request's Redis budget: ``BFF_REDIS_TIMEOUT`` for all its Redis calls together
   (:class:`bff.sessions.store.RedisBudget`).

Before all of them, the request head's bounds (``BFF_MAX_REQUEST_HEADERS``, ``BFF_MAX_HEADER_BYTES``,
``BFF_MAX_COOKIE_BYTES``): 431 ``request_header_fields_too_large`` before any work. ``bff serve`` also
enforces them in the server itself (:mod:`bff.web.protocol`), before the bytes are buffered; this check
holds under any ASGI server.

A client that goes away before its answer (mid-body: Starlette's ``ClientDisconnect``; or while the
upstream call is in flight, as :mod:`bff.web.protocol` reports) is not a server error: the access line and
the metrics say 499 with ``outcome: client_closed``, and nothing is logged at error level.

They are one layer rather than four middlewares because this is the hot path: the headers are read
once, and each extra ASGI layer costs a coroutine and a copy of the header list per request. For the same
reason the hot routes (``direct``: the forwarded API calls without path parameters and ``/auth/verify``,
:func:`bff.app.routes`) are called from here, by method and exact path, rather than through Starlette's
router and its per-request exception wrapper; their errors get the same answer the app's handler gives.
Everything else, and any other method on those paths, goes through the router.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from itertools import chain

from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff import audit, tracing
from bff.config import Settings
from bff.errors import BadRequest, BffError, HeaderFieldsTooLarge, error_response
from bff.logs import request_id_var
from bff.sessions.store import RedisBudget, redis_budget
from bff.web.access_log import RequestRecorder, request_id_for, response_headers
from bff.web.csrf import CsrfPolicy
from bff.web.forwarded import ForwardedHeaders

CLIENT_CLOSED = 499  # nginx's "client closed request": the client went away before its answer


def _client_gone(scope: Scope) -> bool:
    """Whether the server saw the connection close before the answer was sent (bff.web.protocol says so;
    under other servers only ClientDisconnect tells)."""
    gone = (scope.get("extensions") or {}).get("bff.client", {}).get("gone")
    return bool(gone is not None and gone())


_BAD_RAW_PATH = re.compile(rb"%(2[fFeE]|5[cC]|00)")


def path_refusal(scope: Scope) -> Response | None:
    """400 for ambiguous paths, before routing: dot segments, encoded slashes/dots, backslashes, empty segments.

    Resolving such paths is how route checks get bypassed elsewhere (GHSA-pxq7-h93f-9jrg); nothing
    legitimate needs them, so they are refused outright rather than normalised.
    """
    path: str = scope["path"]
    if not canonical_path(path, scope.get("raw_path") or path.encode()):
        return error_response(noncanonical_path())
    return None


def canonical_path(path: str, raw: bytes) -> bool:
    """Whether a path (decoded, and as sent) is free of what :func:`path_refusal` refuses. ``/auth/verify``
    applies it to the original request's path too."""
    return not (
        _BAD_RAW_PATH.search(raw)
        or "\\" in path
        or "#" in path
        or "//" in path
        or "/./" in path + "/"
        or "/../" in path + "/"
    )


def noncanonical_path() -> BadRequest:
    return BadRequest("The request path is not in canonical form.", code="invalid_path")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings, direct: Mapping[tuple[str, str], Route] = {}) -> None:
        self.app = app
        self.direct = dict(direct)  # (method, path) → a route whose endpoint is a plain ASGI app
        self.forwarded = ForwardedHeaders(settings.trusted_proxies)
        self.csrf = CsrfPolicy(settings.effective_allowed_origins)
        self.recorder = RequestRecorder()
        self.redis_timeout = settings.redis_timeout
        self.max_headers = settings.max_request_headers
        self.max_header_bytes = settings.max_header_bytes
        self.max_cookie_bytes = settings.max_cookie_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_many = len(scope["headers"]) > self.max_headers
        headers = {} if too_many else dict(scope["headers"])
        state = scope.setdefault("state", {})
        state["peer_trusted"] = self.forwarded.apply(scope, headers)
        rid = request_id_for(headers)
        token = request_id_var.set(rid)
        client = scope.get("client")
        client_token = audit.client_var.set(client[0] if client else None)  # as forwarded.apply resolved it
        state["request_id"] = rid
        # An incoming traceparent is adopted only from a trusted proxy: from anyone else it would let a client
        # pick the trace id (joining, or flooding, someone else's trace) and the sampled flag, the abuse W3C
        # Trace Context's "Security Considerations" describe; such a request starts a new trace.
        span = tracing.server_span(scope["method"], headers if state["peer_trusted"] else None)
        if span is not None:
            state["trace_id"], state["span_id"] = span.trace_id, span.span_id
        budget_token = redis_budget.set(RedisBudget(self.redis_timeout))
        started = time.perf_counter()
        status = 0  # until the answer starts; a request that ends without one is recorded as a 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = response_headers(list(message.get("headers", [])), rid)
            await send(message)

        try:
            refusal = (
                self._head_refusal(scope, headers, too_many) or path_refusal(scope) or self.csrf.refusal(scope, headers)
            )
            if refusal is not None:
                await refusal(scope, receive, send_wrapper)
            elif (route := self.direct.get((scope["method"], scope["path"]))) is not None:
                scope["route"] = route
                scope["path_params"] = {}
                try:
                    await route.app(scope, receive, send_wrapper)
                except BffError as exc:  # as the app's handler answers it (bff.app), unless the answer began
                    if status:
                        raise RuntimeError("Caught handled exception, but response already started.") from exc
                    await error_response(exc)(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except ClientDisconnect:  # the client hung up mid-body: nothing to answer, nothing went wrong here
            status = CLIENT_CLOSED
        finally:
            status = status or 500
            if status == CLIENT_CLOSED or _client_gone(scope):
                status = CLIENT_CLOSED
                scope["state"]["outcome"] = "client_closed"
            self.recorder.record(scope, status, time.perf_counter() - started)
            if span is not None:  # named after the route the router matched (scope["route"]), if any
                span.finish(getattr(scope.get("route"), "path", None), status, rid)
            request_id_var.reset(token)
            audit.client_var.reset(client_token)
            redis_budget.reset(budget_token)

    def _head_refusal(self, scope: Scope, headers: dict[bytes, bytes], too_many: bool) -> Response | None:
        raw = scope["headers"]
        if not too_many:
            # The head as sent: the target, each "name: value\r\n", and the request line's fixed parts.
            size = len(scope.get("raw_path") or b"") + len(scope["query_string"]) + 16
            size += sum(map(len, chain.from_iterable(raw))) + 4 * len(raw)
            # One Cookie header (RFC 6265 §5.4); should a client send several, the total bound still holds.
            if size <= self.max_header_bytes and len(headers.get(b"cookie", b"")) <= self.max_cookie_bytes:
                return None
        return error_response(
            HeaderFieldsTooLarge(
                f"The request's headers are too large: at most {self.max_headers} headers and "
                f"{self.max_header_bytes} bytes, of which the Cookie header at most {self.max_cookie_bytes} bytes. "
                "Clearing this site's cookies may help."
            )
        )
