"""The forwarder: one handler serving every :class:`~bff.proxy.routes.ForwardRoute`.

Per request: the session (401 without one), who may call (admin routes), validation of path, query and
body, a fresh access token (refreshed inline when it expires within 60 s), then one upstream call through
the pooled client opened in the lifespan (:class:`bff.services.upstream.Upstream`). Headers going up are
an allow-list plus the credentials the route names, so the browser's ``Cookie``, ``Authorization``,
``X-CSRF`` and hop-by-hop headers never leave (RFC 10017 §6.1.1 step K); headers coming back are an
allow-list too, so ``Set-Cookie`` never reaches the browser. An upstream 401 on a call with the user's
token refreshes once and retries once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bff import audit, metrics
from bff.errors import BadRequest, BffError, MethodNotAllowed, session_expired
from bff.proxy.routes import ROUTES, ForwardRoute
from bff.proxy.validation import MAX_BODY_BYTES, upstream_query, validate_body, validate_path
from bff.services.container import Services
from bff.services.upstream import Answer, Upstream
from bff.web.request import BodyTooLarge, media_type, read_limited, require_admin, require_session, services

# Request headers the SPA may pass on; everything else is dropped (allow-list, not deny-list).
_FORWARD_UP = {name.encode(): name for name in ("accept", "accept-language", "accept-encoding", "content-type")}
# Response headers that may come back. Never Set-Cookie, never hop-by-hop.
_PASS_BACK = frozenset(
    {b"content-type", b"content-encoding", b"content-language", b"retry-after", b"etag", b"last-modified", b"vary"}
)
_PASS_BACK_PREFIXES = (b"ratelimit", b"x-ratelimit")
_NO_STORE = (b"cache-control", b"no-store")
_BUFFER_LIMIT = 256 * 1024  # bodies up to this size are read at once; larger ones stream


async def forward(svc: Services, request: Request, route: ForwardRoute) -> ASGIApp:
    current = await require_session(request)
    state = request.scope["state"]
    if route.access == "admin":
        require_admin(svc, current.session)
    path_params = validate_path(route, request.path_params)
    query = upstream_query(route, request.scope["query_string"].decode("latin-1"))
    raw_body = await _read_body(request) if _has_body(request) else b""
    body = validate_body(route, media_type(request), raw_body)
    # The query sent is rebuilt from the validated values (upstream_query), never the request's own.
    upstream = svc.upstream
    url = upstream.bases[route.upstream] + route.upstream_path.format(**path_params)
    target = f"{url}?{query}" if query else url
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:  # the first of each, as Starlette's Headers reads it
        name = _FORWARD_UP.get(raw_name)
        if name is not None and name not in headers:
            headers[name] = raw_value.decode("latin-1")
    if route.grant_facts is not None:
        headers.pop("accept-encoding", None)  # bff reads this answer: it must come back unencoded
    headers.update(svc.client_headers)
    headers["X-Request-ID"] = state.get("request_id", "")
    if body is not None:
        headers["Content-Type"] = "application/json"

    session = current.session
    send = functools.partial(upstream.send, route.upstream, route.method, target, headers, body)
    if route.grant_facts == "learn":  # an administrator changes a transaction limit
        return await _change_limit(svc, state, path_params["grantId"], body, session.sub, send)
    if route.credentials == "user_token" and session.connect:
        # A Kryptos Connect grant (bff.services.connect): a 15-year token, never refreshed.
        handle, grant = await svc.connect.credential(current.id, session)
        headers["Authorization"] = f"Bearer {grant.access_token}"
        answer = await send()
        if answer.status == 401:
            answer.release()
            raise await svc.connect.rejected(current.id, session, handle, grant)
        state["upstream_status"] = answer.status
        return await _to_response(answer)
    if route.credentials == "user_token":
        session = await svc.tokens.fresh(current.id, session)
        headers["Authorization"] = f"Bearer {session.access_token}"
    answer = await send()
    if answer.status == 401 and route.credentials == "user_token":
        # The provider may have revoked the token early: one refresh, one retry.
        answer.release()
        session = await svc.tokens.refresh(current.id, session)
        headers["Authorization"] = f"Bearer {session.access_token}"
        answer = await send()
        if answer.status == 401:
            answer.release()
            await svc.sessions.end(current.id, reason="upstream_rejected")
            metrics.sessions_ended.labels(reason="upstream_401").inc()
            raise session_expired()
    state["upstream_status"] = answer.status
    if route.grant_facts == "annotate":
        headers, raw = await _read_whole(answer)
        if answer.status == 200:
            raw = await svc.grant_facts.annotate_grants(raw)
        return Response(raw, status_code=answer.status, headers=headers)
    return await _to_response(answer)


async def _change_limit(
    svc: Services,
    state: dict[str, Any],
    grant_id: str,
    body: bytes | None,
    admin: str,
    send: Callable[[], Awaitable[Answer]],
) -> Response:
    """``PATCH …/transaction-limit``: forwarded, the grant's kind and limit learned from the answer (the grant
    list shows them, Kryptos's does not), and the change on the audit trail with the upstream's answer."""
    changed = functools.partial(
        audit.record,
        "transaction_limit_changed",
        actor=admin,
        target={"grant": grant_id},
        values=json.loads(body) if body else {},  # validated and rebuilt by validate_body: the fields only
    )
    try:
        answer = await send()
    except BffError as exc:  # Kryptos unreachable or too slow: nothing changed that bff knows of
        changed(outcome="failure", upstream={"status": None, "code": exc.code})
        raise
    state["upstream_status"] = answer.status
    headers, raw = await _read_whole(answer)
    said = await svc.grant_facts.learn_limit(grant_id, answer.status, raw)
    changed(outcome="success" if 200 <= answer.status < 300 else "failure", upstream=said)
    return Response(raw, status_code=answer.status, headers=headers)


async def _read_whole(answer: Answer) -> tuple[dict[str, str], bytes]:
    """An answer bff reads (asked for unencoded, ``accept-encoding`` dropped), for the administrator's routes."""
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in _passed_back(answer) if k != b"content-encoding"}
    return headers, await Upstream.read(answer)


def proxy_routes(routes: tuple[ForwardRoute, ...] = ROUTES) -> list[Route]:
    """Starlette routes for the table: one per local path, its methods exactly those the table lists."""
    by_path: dict[str, dict[str, ForwardRoute]] = {}
    for entry in routes:
        by_path.setdefault(entry.path, {})[entry.method] = entry
    return [Route(path, _Endpoint(entries), methods=list(entries)) for path, entries in by_path.items()]


class _Endpoint:
    """A plain ASGI endpoint (not a request/response function): Starlette then adds no per-route exception
    wrapper, and errors reach the app's handlers all the same. This is the hot path."""

    def __init__(self, by_method: dict[str, ForwardRoute]) -> None:
        self.by_method = by_method

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self.by_method.get(scope["method"])
        if entry is None:  # HEAD, which Starlette admits for GET routes: nothing to forward it as
            raise MethodNotAllowed(headers={"Allow": ", ".join(self.by_method)})
        request = Request(scope, receive)
        response = await forward(services(request), request, entry)
        await response(scope, receive, send)


def _has_body(request: Request) -> bool:
    # Most calls are GETs without a body: do not wait on the server for one that cannot come.
    headers = request.headers
    return "content-length" in headers or "transfer-encoding" in headers


async def _read_body(request: Request) -> bytes:
    try:
        return await read_limited(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise BadRequest("The request body is too large.", code="invalid_body") from None


def _passed_back(answer: Answer) -> list[tuple[bytes, bytes]]:
    """The answer's headers the browser may see, plus ``Cache-Control: no-store``."""
    headers = [(k, v) for k, v in answer.headers if k in _PASS_BACK or k.startswith(_PASS_BACK_PREFIXES)]
    headers.append(_NO_STORE)
    return headers


class _Buffered:
    """An upstream answer read whole, sent as it is: the header list is built once, with no dict between."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.body = body
        # RFC 9110 §8.6 forbids a Content-Length on 1xx and 204; a 304's would describe a body it does not send.
        if status >= 200 and status not in (204, 304):
            headers.append((b"content-length", str(len(body)).encode()))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


async def _to_response(answer: Answer) -> ASGIApp:
    headers = _passed_back(answer)
    length = answer.content_length
    if length is not None and length <= _BUFFER_LIMIT:
        return _Buffered(answer.status, headers, await Upstream.read(answer))
    response = StreamingResponse(Upstream.stream(answer), status_code=answer.status)
    response.raw_headers = headers
    return response
