"""``POST /auth/backchannel-logout``: OpenID Connect Back-Channel Logout 1.0, server to server.

The provider posts a signed ``logout_token``; once it validates (:meth:`~bff.oidc.OidcClient.verify_logout_token`)
and its ``jti`` has not been seen, the sessions of that provider ``sid`` (or, without one, every session of
that ``sub``) are deleted through the indexes the session manager keeps. Answers per §2.8: 200 on success,
400 with ``error`` on an invalid token. No cookie or CSRF header is involved: the token is the credential.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bff import metrics
from bff.errors import BadRequest, BffError, problem
from bff.sessions.store import logout_token_key
from bff.web import services

log = logging.getLogger("bff.backchannel")

_JTI_MEMORY = 900  # seconds; longer than the oldest logout token accepted
_MAX_FORM_BYTES = 16 * 1024


def _refuse(detail: str) -> Response:
    # problem+json like every error here, with the `error` member back-channel senders look for.
    return problem(400, "invalid_logout_token", detail, extra={"error": "invalid_request", "error_description": detail})


async def backchannel_logout(request: Request) -> Response:
    svc = services(request)
    if (request.headers.get("content-type") or "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return _refuse("Send the logout_token as an application/x-www-form-urlencoded form.")
    if int(request.headers.get("content-length") or 0) > _MAX_FORM_BYTES:
        return _refuse("The request is too large.")
    try:
        form = await request.form(max_files=0, max_fields=4)
    except HTTPException:  # Starlette's own limits (too many fields, a file): still the sender's format
        return _refuse("The request must carry only the logout_token form field.")
    token = form.get("logout_token")
    if not isinstance(token, str) or not token:
        return _refuse("logout_token is missing.")
    try:
        claims = await svc.oidc.verify_logout_token(token)
    except BadRequest as exc:
        log.warning("back-channel logout refused", extra={"reason": exc.code})
        return _refuse(exc.detail)
    except BffError:
        raise  # provider unreachable for the JWKS: 502, the sender may retry
    if not await svc.sessions.store.set_if_absent(logout_token_key(claims.jti), b"1", ttl=_JTI_MEMORY):
        return _refuse("This logout token was already used.")
    ended = await svc.sessions.delete_for_subject(claims.sub or "", provider_sid=claims.sid)
    metrics.sessions_ended.labels(reason="backchannel_logout").inc(ended)
    log.info("back-channel logout", extra={"outcome": f"ended {ended}"})
    return Response(status_code=200, headers={"Cache-Control": "no-store"})


routes = [Route("/auth/backchannel-logout", backchannel_logout, methods=["POST"])]
