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
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from yarl import URL

from bff import audit, metrics
from bff.errors import BadRequest, BffError, MethodNotAllowed, session_expired
from bff.proxy.routes import ROUTES, ForwardRoute
from bff.proxy.validation import MAX_BODY_BYTES, validate_body, validate_path, validate_query
from bff.services.container import Services
from bff.services.upstream import Answer, Upstream
from bff.web.request import BodyTooLarge, media_type, read_limited, require_admin, require_session, services

# Request headers the SPA may pass on; everything else is dropped (allow-list, not deny-list).
_FORWARD_UP = ("accept", "accept-language", "accept-encoding", "content-type")
# Response headers that may come back. Never Set-Cookie, never hop-by-hop.
_PASS_BACK = frozenset(
    {"content-type", "content-encoding", "content-language", "retry-after", "etag", "last-modified", "vary"}
)
_PASS_BACK_PREFIXES = ("ratelimit", "x-ratelimit")
_BUFFER_LIMIT = 256 * 1024  # bodies up to this size are read at once; larger ones stream


async def forward(svc: Services, request: Request, route: ForwardRoute) -> Response:
    current = await require_session(request)
    state = request.scope["state"]
    if route.access == "admin":
        require_admin(svc, current.session)
    path_params = validate_path(route, request.path_params)
    query = validate_query(route, request.query_params)
    raw_body = await _read_body(request) if _has_body(request) else b""
    body = validate_body(route, media_type(request), raw_body)
    # The query is rebuilt from validated values and encoded once here; yarl is told not to re-encode.
    upstream = svc.upstream
    url = upstream.bases[route.upstream] + route.upstream_path.format(**path_params)
    target = URL(f"{url}?{urlencode(query)}" if query else url, encoded=True)
    headers = {k: request.headers[k] for k in _FORWARD_UP if k in request.headers}
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
    headers = _response_headers(answer)
    headers.pop("content-encoding", None)
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


def _response_headers(answer: Answer) -> dict[str, str]:
    headers = {
        k: v for k, v in answer.headers.items() if (lk := k.lower()) in _PASS_BACK or lk.startswith(_PASS_BACK_PREFIXES)
    }
    headers["Cache-Control"] = "no-store"
    return headers


async def _to_response(answer: Answer) -> Response:
    headers = _response_headers(answer)
    length = answer.content_length
    if length is not None and length <= _BUFFER_LIMIT:
        return Response(await Upstream.read(answer), status_code=answer.status, headers=headers)
    return StreamingResponse(Upstream.stream(answer), status_code=answer.status, headers=headers)
