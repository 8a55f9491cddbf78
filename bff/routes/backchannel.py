"""``POST /auth/backchannel-logout``: OpenID Connect Back-Channel Logout 1.0, server to server.

The provider posts a signed ``logout_token``; once it validates
(:meth:`~bff.oidc.client.OidcClient.verify_logout_token`) and its ``jti`` has not been seen, the sessions
of that provider ``sid`` (or, without one, every session of that ``sub``) are deleted through the indexes
the session manager keeps. Answers per §2.8: 200 on success, 400 with ``error`` on an invalid token
(:class:`~bff.errors.InvalidLogoutToken`). No cookie or CSRF header is involved: the token is the credential.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from bff import audit, metrics
from bff.errors import BffError, InvalidLogoutToken
from bff.services.container import Services
from bff.web.request import BodyTooLarge, client_address, media_type, read_limited, services

log = logging.getLogger("bff.backchannel")

_MAX_FORM_BYTES = 16 * 1024


async def backchannel_logout(request: Request) -> Response:
    svc = services(request)
    # First: before the form is read or a key fetched.
    await svc.limits.check(client_address(request), "backchannel_logout")
    try:
        return await _logout(request, svc)
    except BffError as exc:
        audit.record("backchannel_logout", outcome="failure", code=exc.code)
        raise


async def _logout(request: Request, svc: Services) -> Response:
    if media_type(request) != "application/x-www-form-urlencoded":
        raise InvalidLogoutToken("Send the logout_token as an application/x-www-form-urlencoded form.")
    # Bounded whether or not a Content-Length is declared (chunked); one that is not a number is the sender's
    # error (400), never a 500. A sender hanging up mid-body is a 499 access line (bff.web.edge).
    try:
        body = await read_limited(request, _MAX_FORM_BYTES)
    except BodyTooLarge:
        raise InvalidLogoutToken("The request is too large, or its Content-Length is not a number.") from None
    try:
        fields = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=4)
    except ValueError:  # not UTF-8, or more fields than a logout request has
        raise InvalidLogoutToken("The request must carry only the logout_token form field.") from None
    tokens = [value for name, value in fields if name == "logout_token"]
    token = tokens[-1] if tokens else ""
    if not token:
        raise InvalidLogoutToken("logout_token is missing.")
    try:
        claims = await svc.oidc.verify_logout_token(token)
    except InvalidLogoutToken:
        # Any other error (the provider unreachable for its keys: 502) passes: the sender may retry.
        log.warning("back-channel logout refused", extra={"reason": "invalid_logout_token"})
        raise
    if await svc.sessions.logout_token_seen(claims.jti):
        raise InvalidLogoutToken("This logout token was already used.")
    ended = await svc.sessions.delete_for_subject(claims.sub or "", provider_sid=claims.sid)
    # Remembered only once the sessions are gone: if Redis failed half-way, the sender's retry is not a replay.
    await svc.sessions.remember_logout_token(claims.jti)
    metrics.sessions_ended.labels(reason="backchannel_logout").inc(ended)
    log.info("back-channel logout", extra={"outcome": f"ended {ended}"})
    audit.record("backchannel_logout", target={"sub": claims.sub}, ended=ended)
    return Response(status_code=200, headers={"Cache-Control": "no-store"})
