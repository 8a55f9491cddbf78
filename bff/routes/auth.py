"""The ``/auth/*`` handlers: thin glue between HTTP and :class:`bff.services.login.LoginService`.

What is HTTP stays here: query parameters, the login-binding cookie (one per browser, reused by parallel
sign-ins in other tabs: oauth2-proxy 817, 3258), the session cookie, redirects and their headers. A login
started with ``client=mobile`` (a native app, :mod:`bff.routes.mobile`) runs the same upstream flow and
creates its session the same way; only the end differs: a one-time hand-off code redirected to the app
instead of a cookie.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bff import audit
from bff.errors import BadRequest, BffError, NotAuthenticated
from bff.routes import mobile
from bff.services.container import Services
from bff.sessions.cookie import new_session_id
from bff.sessions.device import device_code
from bff.sessions.handoff import MobileLogin
from bff.sessions.manager import LOGIN_STATE_TTL
from bff.web.request import (
    authenticated_by_header,
    clear_session_cookie,
    client_address,
    constant_time_equals,
    current_session,
    require_session,
    safe_return_to,
    services,
    set_session_cookie,
)

_LOGIN_HINT = re.compile(r"^[\w.@+-]{1,128}$")
_PROMPTS = frozenset({"login", "consent", "select_account", "none"})
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
BINDING_MAX_AGE = LOGIN_STATE_TTL  # the browser-binding cookie lives as long as a pending login state


def _bad_parameter(name: str, detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_parameter", extra={"parameter": name})


async def login(request: Request) -> Response:
    svc = services(request)
    await svc.limits.check(client_address(request), "login")  # first: a refused start stores nothing
    params = request.query_params
    return_to = safe_return_to(params.get("return_to"))
    client = params.get("client")
    if client not in (None, "web", "mobile"):
        raise _bad_parameter("client", "client must be web or mobile.")
    # Validated before anything is stored or sent upstream: a bad redirect_uri is a 400, never a redirect.
    app = mobile.parse_login(params, svc.settings) if client == "mobile" else None
    hint = params.get("login_hint")
    prompt = params.get("prompt")
    if hint is not None and not _LOGIN_HINT.fullmatch(hint):
        raise _bad_parameter("login_hint", "login_hint is not a valid user hint.")
    if prompt is not None and prompt not in _PROMPTS:
        raise _bad_parameter("prompt", "prompt is not a supported value.")
    known_binding = svc.binding_codec.unsign(request.cookies.get(svc.settings.login_cookie_name))
    binding_id = known_binding or new_session_id()
    url = await svc.login.start(
        binding_id=binding_id,
        new_binding=known_binding is None,
        return_to=return_to,
        login_hint=hint,
        prompt=prompt,
        app=app,
    )
    response = RedirectResponse(url, status_code=302, headers=_NO_STORE)
    s = svc.settings
    response.set_cookie(
        s.login_cookie_name,
        svc.binding_codec.sign(binding_id),
        max_age=BINDING_MAX_AGE,
        path="/",
        secure=s.secure_cookies,
        httponly=True,
        samesite="lax",  # must travel on the provider's top-level redirect back to us
    )
    return response


async def callback(request: Request) -> Response:
    svc = services(request)
    await svc.limits.check(client_address(request), "callback")  # first: a refused callback consumes nothing
    try:
        return await _finish_sign_in(request, svc)
    except BffError as exc:  # the success is recorded where the session is made (LoginService)
        audit.record("sign_in", outcome="failure", code=exc.code)
        raise


async def _finish_sign_in(request: Request, svc: Services) -> Response:
    s = svc.settings
    login_state = await svc.login.take_state(request.query_params.get("state") or "")
    svc.login.check_binding(login_state, svc.binding_codec.unsign(request.cookies.get(svc.settings.login_cookie_name)))
    app = MobileLogin.from_extra(login_state.extra)
    try:
        finished = await svc.login.finish(
            login_state, request.query_params, device=device_code(request.headers.get("user-agent"))
        )
    except BffError as exc:
        if app is None:
            raise
        audit.record("sign_in", outcome="failure", code=exc.code, kind="mobile")
        # The redirect URI is known-good by now (it was checked at the start): the app hears why.
        return mobile.error_redirect(app, exc.code)
    if finished.session_id is None:  # the provider said no (error=...)
        error = finished.provider_error or "login_failed"
        audit.record("sign_in", outcome="failure", code=error, kind="mobile" if app else "browser")
        if app is not None:
            return mobile.error_redirect(app, error)
        return RedirectResponse(f"/?login_error={error}", status_code=302, headers=_NO_STORE)
    previous = None if app is not None else svc.session_codec.unsign(request.cookies.get(s.session_cookie_name))
    # The new session uses the grant this browser's previous session had, or one bound to the user. (The
    # grant cookie is SameSite=Strict: it does not come along on the provider's cross-site redirect.)
    await svc.connect.adopt(finished.session_id, previous)
    if app is not None:
        return mobile.handoff_redirect(app, await svc.handoffs.issue(finished.session_id, app))
    if previous is not None:
        await svc.login.replace(previous)
    response = RedirectResponse(login_state.return_to, status_code=302, headers=_NO_STORE)
    set_session_cookie(response, svc, finished.session_id)
    return response


async def session_info(request: Request) -> Response:
    svc = services(request)
    s = (await require_session(request)).session
    if not s.signed_in_with_oidc:  # a Connect-only session (bff.routes.connect): nobody is signed in
        raise NotAuthenticated("Sign in first.", code="not_authenticated")
    now = svc.sessions.clock()
    remaining = max(0, int(svc.sessions.remaining(s, now)))
    body: dict[str, Any] = {
        "authenticated": True,
        "user": {"sub": s.sub, **s.claims},
        "scopes": s.scope.split(),
        "expires_at": int(now) + remaining,
        "expires_in": remaining,
        "absolute_expires_at": int(s.expires_at),
        "logout_url": f"/auth/logout?sid={s.logout_csrf}",
        "is_admin": s.sub in svc.settings.admin_subjects,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def logout_post(request: Request) -> Response:
    svc = services(request)
    current = await current_session(request)
    logout_url = await svc.login.end(current.id, current.session) if current else None
    response = JSONResponse({"logout_url": logout_url}, headers={"Cache-Control": "no-store"})
    if not authenticated_by_header(request):  # an app's request has no cookie to clear
        clear_session_cookie(response, svc)
    return response


async def logout_get(request: Request) -> Response:
    """Navigation form of logout; ``sid`` is its CSRF defence (a cross-site link cannot know it)."""
    svc = services(request)
    current = await current_session(request)
    target = "/"
    if current is not None:
        sid = request.query_params.get("sid") or ""
        if not constant_time_equals(sid, current.session.logout_csrf):
            raise BadRequest("The logout link is not valid for this session.", code="invalid_logout_request")
        target = await svc.login.end(current.id, current.session) or "/"
    response = RedirectResponse(target, status_code=302, headers=_NO_STORE)
    clear_session_cookie(response, svc)
    return response
