"""The ``/connect/*`` handlers (the Kryptos Connect widget) and the administrator's grant revocation: thin
glue between HTTP and :class:`bff.services.connect.ConnectService`.

What is HTTP stays here: the JSON bodies, the session cookie (a browser without a session gets one when it
connects) and the **grant cookie**. The grant cookie is how a Guest's grant outlives a browser session
without the token ever reaching the browser: it holds a signed random reference to the server-side grant
record (never the token, never the grant id), is ``HttpOnly``, ``Secure`` with the ``__Host-`` prefix on
https, ``SameSite=Strict`` (only the SPA's own calls need it), and lives ``BFF_CONNECT_IDLE_TIMEOUT``
(browsers cap it at 400 days). A native app (``Authorization: Session``) gets no cookies: its session holds
the grant, and the grant is bound to the app user's subject.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.errors import BadRequest, BffError, NotAuthenticated, error_response
from bff.proxy.routes import GRANT_ID
from bff.proxy.validation import invalid_parameter, json_object
from bff.services.connect import NOT_CONNECTED, check_public_token
from bff.services.container import Services
from bff.sessions.connect import ConnectGrant
from bff.web.request import (
    BodyTooLarge,
    CurrentSession,
    authenticated_by_header,
    client_address,
    current_session,
    media_type,
    read_limited,
    require_admin,
    require_session,
    services,
    set_session_cookie,
)

_NO_STORE = {"Cache-Control": "no-store"}
_MAX_BODY = 2048


async def _caller(request: Request) -> CurrentSession | None:
    """The current session; a native app's request (``Authorization: Session``) must name a live one."""
    current = await current_session(request)
    if current is None and authenticated_by_header(request):
        raise NotAuthenticated("Sign in first.", code="not_authenticated")
    return current


def _reference(request: Request, svc: Services) -> str | None:
    if authenticated_by_header(request):
        return None  # an app's request is authenticated by its header alone, never by a cookie
    return svc.connect_codec.unsign(request.cookies.get(svc.settings.connect_cookie_name))


async def _use(
    svc: Services, current: CurrentSession | None, handle: str, grant: ConnectGrant, response: Response
) -> None:
    """Attach the grant to the request's session (starting one when there is none) and say so in cookies."""
    session_id, created = await svc.connect.attach(
        current.id if current else None, current.session if current else None, handle, grant
    )
    if created:
        set_session_cookie(response, svc, session_id)


def _set_grant_cookie(response: Response, svc: Services, reference: str) -> None:
    s = svc.settings
    response.set_cookie(
        s.connect_cookie_name,
        svc.connect_codec.sign(reference),
        max_age=min(s.connect_idle_timeout, 400 * 86400),
        path="/",
        secure=s.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def _renew_grant_cookie(response: Response, svc: Services, reference: str | None, handle: str) -> None:
    """The grant cookie slides with use (like the grant's idle clock), when it is the one that was used."""
    if reference is not None and svc.connect.grants.handle(reference) == handle:
        _set_grant_cookie(response, svc, reference)


def _clear_grant_cookie(response: Response, svc: Services) -> None:
    s = svc.settings
    response.delete_cookie(s.connect_cookie_name, path="/", secure=s.secure_cookies, httponly=True, samesite="strict")


async def link_token(request: Request) -> Response:
    svc = services(request)
    await svc.limits.check(client_address(request), "connect")  # first: a refused call costs Kryptos nothing
    current = await _caller(request)
    await svc.limits.spend_connect_budget()
    reference = _reference(request, svc)
    found = await svc.connect.find(current.session if current else None, reference)
    link, authorized = await svc.connect.link_token(found[1] if found else None)
    response = JSONResponse({"link_token": link, "isAuthorized": authorized}, headers=_NO_STORE)
    if authorized and found is not None:
        # A returning browser: the widget skips consent and no new public token comes; use the grant it has.
        await _use(svc, current, found[0], found[1], response)
        _renew_grant_cookie(response, svc, reference, found[0])
    return response


async def exchange(request: Request) -> Response:
    svc = services(request)
    await svc.limits.check(client_address(request), "connect")
    public_token = check_public_token((await _json_body(request)).get("public_token"))
    current = await _caller(request)
    await svc.limits.spend_connect_budget()
    sub = current.session.sub if current is not None else ""
    reference, grant = await svc.connect.exchange(public_token, sub=sub or None)
    handle = svc.connect.grants.handle(reference)
    body = {"connected": True, "workspace_id": grant.workspace_id, "scopes": grant.scope.split()}
    response: Response = JSONResponse(body, headers=_NO_STORE)
    try:
        await _use(svc, current, handle, grant, response)
    except BffError as exc:
        # The grant is stored but no session could take it (the session ended meanwhile, Redis faltered):
        # the answer is the error, and the grant cookie still goes out, so the next /connect/status finds
        # the grant instead of leaving it unreachable (a signed-in user's grant is bound to them anyway).
        response = error_response(exc)
    if not authenticated_by_header(request):
        _set_grant_cookie(response, svc, reference)
    return response


async def status(request: Request) -> Response:
    svc = services(request)
    current = await _caller(request)
    reference = _reference(request, svc)
    found = await svc.connect.find(current.session if current else None, reference)
    answer = NOT_CONNECTED if found is None else await svc.connect.status(*found)
    response = JSONResponse(answer, headers=_NO_STORE)
    if found is not None and answer["connected"]:
        await _use(svc, current, found[0], found[1], response)
        _renew_grant_cookie(response, svc, reference, found[0])
    elif reference is not None and (found is None or svc.connect.grants.handle(reference) == found[0]):
        _clear_grant_cookie(response, svc)  # it names a grant that is gone: stop sending it
    return response


async def disconnect(request: Request) -> Response:
    svc = services(request)
    current = await _caller(request)
    found = await svc.connect.find(current.session if current else None, _reference(request, svc))
    if found is not None:
        await svc.connect.disconnect(*found)
        if current is not None:
            await svc.connect.release(current.id, current.session, found[0])
    response = JSONResponse({"connected": False}, headers=_NO_STORE)
    if not authenticated_by_header(request):
        _clear_grant_cookie(response, svc)
    return response


async def revoke_grant(request: Request) -> Response:
    """``POST /api/developer/grants/{grantId}/revoke``: an administrator ends a grant everywhere."""
    svc = services(request)
    current = await require_session(request)
    require_admin(svc, current.session)
    grant_id = request.path_params["grantId"]
    if not GRANT_ID.fullmatch(grant_id):
        raise invalid_parameter("grantId", "is not a valid identifier")
    await svc.connect.revoke(grant_id)
    return JSONResponse({"revoked": True, "grant_id": grant_id}, headers=_NO_STORE)


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        raw = await read_limited(request, _MAX_BODY)
    except BodyTooLarge:
        raise BadRequest("The request body is too large.", code="invalid_body") from None
    return json_object(media_type(request), raw)
