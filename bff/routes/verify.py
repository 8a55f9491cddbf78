"""``/auth/verify``: the external-authorization mode, where the ingress carries the API call and bff only
turns the session into the credentials the call needs (README: "External authorization").

The ingress (nginx ``auth_request``, Traefik ``forwardAuth``, Caddy ``forward_auth``, Envoy ``ext_authz``)
asks before each original request, passing that request's headers. The answer is 200 with the headers the
upstream needs (``Authorization: Bearer …`` for calls with the user's token, ``X-Client-Id``,
``X-Client-Secret``), for the ingress to copy onto the upstream request, or 401/403 problem+json. The
original request is judged by the proxy's own rules, in the proxy's order: canonical path, CSRF header and
``Origin`` (:class:`bff.web.csrf.CsrfPolicy`), the session, the route table (:func:`bff.proxy.routes.match`;
anything not in it is 403), admin-only routes, path and query validation; the access token is refreshed
when due, under the same lock (:meth:`bff.services.tokens.TokenService.fresh`). Nothing is called upstream
and nothing is written per request.

Every refusal is 401 or 403: nginx's ``auth_request`` turns any other status into a 500, so a refused
query parameter answers 403 ``invalid_parameter`` here where the proxy answers 400. (One exception: Envoy's
appended path passes the edge's path guard first, which answers 400 ``invalid_path``; Envoy relays a
denial's status as it is.) Only a trusted proxy
(``BFF_TRUSTED_PROXIES``, the TCP peer itself) may ask, since the answer carries the client secret; with
``BFF_VERIFY_PORT`` set, only on that port (the main port answers 404), because the ingress is a trusted
peer too when it relays a browser's own request.

What this mode cannot do, because the call's bytes never pass through bff: check the request body (nginx's
subrequest has none), retry once with a refreshed token after an upstream 401, confirm a Connect grant's
revocation, learn grant facts, or filter the upstream's response headers. The README says what the
ingress must do instead.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bff import audit
from bff.errors import BadRequest, Forbidden, NotFound
from bff.proxy.routes import match
from bff.proxy.validation import upstream_query, validate_path
from bff.web.csrf import CsrfPolicy
from bff.web.edge import canonical_path, noncanonical_path
from bff.web.request import require_admin, require_session, services

PREFIX = "/auth/verify"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_MAX_METHOD = 16


class _Endpoint:
    """A plain ASGI endpoint (not a request/response function), like the forwarder's: Starlette adds no
    per-route exception wrapper, and the edge may call it directly (:func:`bff.app.direct_routes`). An
    ingress asks this before every API call."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await _verify(Request(scope, receive))
        except BadRequest as exc:  # what the proxy answers 400 is a refusal here: 403, same code and detail
            raise Forbidden(exc.detail, code=exc.code, extra=exc.extra) from None
        await response(scope, receive, send)


verify = _Endpoint()


async def _verify(request: Request) -> Response:
    svc = services(request)
    verify_port = svc.settings.verify_port
    if verify_port and (request.scope.get("server") or ("", 0))[1] != verify_port:
        raise NotFound()
    if not request.scope["state"].get("peer_trusted"):
        raise Forbidden("Only the ingress may ask this.", code="untrusted_caller")
    method, path, raw_path, query = _original(request)
    if not canonical_path(path, raw_path.encode("latin-1")):
        raise noncanonical_path()
    headers = dict(request.scope["headers"])
    refusal = _policy(svc.settings.effective_allowed_origins).check(method, path, headers, request.scope["headers"])
    if refusal is not None:
        raise refusal
    found = match(method, path)
    if found is None:
        raise Forbidden(f"{method} {path} is not an API call this service allows.", code="route_not_allowed")
    route, params = found
    current = await require_session(request)
    session = current.session
    if route.access == "admin":
        require_admin(svc, session)
    validate_path(route, params)
    upstream_query(route, query)
    answer = {"Cache-Control": "no-store", **svc.client_headers}
    if route.credentials == "user_token":
        if session.connect:  # a Kryptos Connect grant: its token, never refreshed (bff.services.connect)
            _, grant = await svc.connect.credential(current.id, session)
            answer["Authorization"] = f"Bearer {grant.access_token}"
        else:
            session = await svc.tokens.fresh(current.id, session)
            answer["Authorization"] = f"Bearer {session.access_token}"
    if route.grant_facts == "learn":
        # The ingress sends the change itself: bff sees neither its body nor Kryptos's answer, only that the
        # administrator was allowed to make it.
        audit.record(
            "transaction_limit_changed",
            outcome="authorized",
            actor=session.sub,
            target={"grant": params["grantId"]},
            values=None,
            upstream=None,
        )
    return Response(status_code=200, headers=answer)


def _original(request: Request) -> tuple[str, str, str, str]:
    """The original request's method, path (decoded), path as sent, and query string.

    nginx sends ``X-Original-Method`` / ``X-Original-URI`` (the ingress-nginx names, and what a plain
    ``auth_request`` location is told to send); Traefik and Caddy send ``X-Forwarded-Method`` /
    ``X-Forwarded-Uri``; Envoy's ``ext_authz`` with ``path_prefix: /auth/verify`` keeps the method and
    appends the original path to ours.

    Each ingress sets only its own names and passes the browser's other headers on, so a browser could send
    the other names itself: Caddy would forward ``PATCH /api/developer/…`` while ``X-Original-*`` asked about
    ``GET /api/v1/userinfo``. So every source present must name the same request; any disagreement, or a
    name sent twice, is 403 ``original_request_unknown`` whatever the ingress."""
    headers = request.headers
    methods = [*headers.getlist("x-original-method"), *headers.getlist("x-forwarded-method")]
    uris = [*headers.getlist("x-original-uri"), *headers.getlist("x-forwarded-uri")]
    scope_path: str = request.scope["path"]
    if scope_path.startswith(PREFIX + "/"):  # Envoy: this request's own method and the path after ours
        raw = (request.scope.get("raw_path") or scope_path.encode()).decode("latin-1")
        query_string = request.scope["query_string"].decode("latin-1")
        uris.append(raw[len(PREFIX) :] + (f"?{query_string}" if query_string else ""))
        methods.append(request.method)
    elif not methods:  # nginx's auth_request keeps the original method
        methods.append(request.method)
    if not uris:
        raise BadRequest(
            "The ingress did not say which request to authorize: send X-Original-URI (nginx) or "
            "X-Forwarded-Uri (Traefik, Caddy), or append the path (Envoy's path_prefix).",
            code="original_request_unknown",
        )
    if len({m.strip().upper() for m in methods}) != 1 or len(set(uris)) != 1:
        raise BadRequest("The request names more than one original request.", code="original_request_unknown")
    method, uri = methods[0].strip().upper(), uris[0]
    if not method.isascii() or not method.isalpha() or len(method) > _MAX_METHOD:
        raise BadRequest("The original method is not an HTTP method.", code="original_request_unknown")
    raw_path, _, query = uri.partition("?")
    if not raw_path.startswith("/") or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in uri):
        raise BadRequest("The original URI is not an origin-form request target.", code="original_request_unknown")
    return method, unquote(raw_path), raw_path, query


@functools.cache
def _policy(allowed_origins: Iterable[str]) -> CsrfPolicy:
    return CsrfPolicy(allowed_origins)
