"""The ``/auth/*`` handlers (contract §4.1-4.2): thin glue between HTTP and :mod:`bff.oidc` / sessions.

Security state changes happen here, each explicit: login state is stored server-side keyed by ``state``
and bound to the browser by one small cookie (parallel tabs share it); the callback consumes that state
exactly once; a *new* session id is issued at every login and any previous session is deleted (session
fixation, oauth2-proxy GHSA-f24x-5g9q-753f); logout revokes both tokens (RFC 7009) and deletes the record.

A login started with ``client=mobile`` (a native app, :mod:`bff.mobile`) runs the same upstream flow and
creates its session the same way; only the end differs: a one-time hand-off code redirected to the app
instead of a cookie.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bff import metrics, mobile
from bff.errors import BadRequest, BffError, SessionStoreUnavailable
from bff.mobile import MobileLogin
from bff.oidc import TokenRejected, TokenSet
from bff.sessions import LoginState, Session
from bff.sessions.cookie import new_session_id
from bff.sessions.manager import LOGIN_STATE_TTL
from bff.tokens import refresh_due_at
from bff.web import (
    CurrentSession,
    authenticated_by_header,
    clear_session_cookie,
    constant_time_equals,
    current_session,
    require_session,
    safe_return_to,
    services,
    set_session_cookie,
)

log = logging.getLogger("bff.auth")

# ID-token claims worth keeping for /auth/session; everything else is dropped (bytes per session count).
_DISPLAY_CLAIMS = ("name", "email", "email_verified", "preferred_username", "picture", "locale", "language")
_LOGIN_HINT = re.compile(r"^[\w.@+-]{1,128}$")
_PROMPTS = frozenset({"login", "consent", "select_account", "none"})
_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
BINDING_MAX_AGE = LOGIN_STATE_TTL  # the browser-binding cookie lives as long as a pending login state


def _binding_hash(binding_id: str) -> str:
    return hashlib.sha256(binding_id.encode()).hexdigest()


async def login(request: Request) -> Response:
    svc = services(request)
    await svc.limits.check(request, "login")  # first: a refused start stores nothing and calls no provider
    return_to = safe_return_to(request.query_params.get("return_to"))
    client = request.query_params.get("client")
    if client not in (None, "web", "mobile"):
        raise BadRequest("client must be web or mobile.", code="invalid_parameter", extra={"parameter": "client"})
    # Validated before anything is stored or sent upstream: a bad redirect_uri is a 400, never a redirect.
    app = mobile.parse_login(request.query_params, svc.settings) if client == "mobile" else None
    hint = request.query_params.get("login_hint")
    prompt = request.query_params.get("prompt")
    if hint is not None and not _LOGIN_HINT.fullmatch(hint):
        raise BadRequest(
            "login_hint is not a valid user hint.",
            code="invalid_parameter",
            extra={"parameter": "login_hint"},
        )
    if prompt is not None and prompt not in _PROMPTS:
        raise BadRequest("prompt is not a supported value.", code="invalid_parameter", extra={"parameter": "prompt"})
    auth = await svc.oidc.authorization_request(login_hint=hint, prompt=prompt)
    # One binding cookie per browser, reused by parallel logins in other tabs (oauth2-proxy 817, 3258).
    known_binding = svc.binding_codec.unsign(request.cookies.get(svc.settings.login_cookie_name))
    binding_id = known_binding or new_session_id()
    await svc.limits.start_login(_binding_hash(binding_id), auth.state, new_binding=known_binding is None)
    await svc.sessions.save_login_state(
        auth.state,
        LoginState(
            code_verifier=auth.code_verifier,
            nonce=auth.nonce,
            return_to=return_to,
            binding_hash=_binding_hash(binding_id),
            redirect_uri=svc.settings.redirect_uri,
            issuer=svc.settings.issuer,
            created_at=svc.sessions.clock(),
            extra=app.to_extra() if app else {},
        ),
    )
    response = RedirectResponse(auth.url, status_code=302, headers=_NO_STORE)
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
    await svc.limits.check(request, "callback")  # first: a refused callback consumes nothing, redeems nothing
    params = request.query_params
    state = params.get("state") or ""
    login_state = await svc.sessions.take_login_state(state) if state else None
    if login_state is None:
        raise BadRequest("This sign-in attempt is unknown, expired or already used.", code="invalid_state")
    await svc.limits.finish_login(login_state.binding_hash, state)
    binding_id = svc.binding_codec.unsign(request.cookies.get(svc.settings.login_cookie_name))
    if binding_id is None or not constant_time_equals(_binding_hash(binding_id), login_state.binding_hash):
        raise BadRequest("This sign-in was started in another browser.", code="login_binding_mismatch")
    app = MobileLogin.from_extra(login_state.extra)
    try:
        tokens, claims = await _authenticate(request, login_state)
    except _ProviderError as exc:
        log.info("provider returned an error at the callback", extra={"error": exc.error})
        if app is not None:
            return mobile.error_redirect(app, exc.error)
        return RedirectResponse(f"/?login_error={exc.error}", status_code=302, headers=_NO_STORE)
    except BffError as exc:
        if app is None:
            raise
        # The redirect URI is known-good by now (it was checked at the start): the app hears why.
        return mobile.error_redirect(app, exc.code)

    session_id = await _create_session(request, tokens, claims)
    if app is not None:
        code = await svc.handoffs.issue(session_id, app)
        return mobile.handoff_redirect(app, code)
    previous = svc.session_codec.unsign(request.cookies.get(svc.settings.session_cookie_name))
    if previous is not None:
        # The old session ends first (every replica stops serving it), then its tokens are revoked.
        replaced = await svc.sessions.end(previous)
        if replaced is not None:
            await _revoke_all(request, replaced.refresh_token, replaced.access_token)
    response = RedirectResponse(login_state.return_to, status_code=302, headers=_NO_STORE)
    set_session_cookie(response, svc, session_id)
    return response


class _ProviderError(Exception):
    """The provider answered the authorization request with ``error=`` (the person denied, …)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def _authenticate(request: Request, login_state: LoginState) -> tuple[TokenSet, dict[str, Any]]:
    """Check the authorization response, redeem the code and validate the ID token: tokens and claims."""
    svc = services(request)
    params = request.query_params
    meta = await svc.oidc.metadata()
    # RFC 9207: the issuer that answered must be the one we asked (mix-up defence).
    iss = params.get("iss")
    if (iss is not None and iss != login_state.issuer) or (iss is None and meta.iss_parameter_supported):
        raise BadRequest("The authorization response came from an unexpected issuer.", code="issuer_mismatch")
    if "error" in params:
        raise _ProviderError(params["error"] if _ERROR_CODE.fullmatch(params["error"]) else "login_failed")
    code = params.get("code")
    if not code:
        raise BadRequest("The authorization response carries no code.", code="invalid_request")
    try:
        tokens = await svc.oidc.exchange_code(code, login_state.code_verifier, login_state.redirect_uri)
    except TokenRejected as exc:
        log.warning("code exchange refused", extra={"error": exc.error})
        raise BadRequest("The identity provider refused the sign-in.", code="login_failed") from exc
    if not tokens.id_token:
        raise BadRequest("The identity provider returned no ID token.", code="invalid_id_token")
    try:
        claims = await svc.oidc.verify_id_token(
            tokens.id_token, nonce=login_state.nonce, access_token=tokens.access_token
        )
    except BffError:
        # The tokens are not to be trusted or kept: revoke what was issued, best effort.
        await _revoke_all(request, tokens.refresh_token, tokens.access_token)
        raise
    return tokens, claims


async def _create_session(request: Request, tokens: TokenSet, claims: dict[str, Any]) -> str:
    """Store a session for verified tokens under a **new** id (browser and app alike) and return the id."""
    svc = services(request)
    now = svc.sessions.clock()
    refresh_expires = tokens.refresh_expires_at
    if tokens.refresh_token and refresh_expires is None:
        refresh_expires = now + svc.settings.refresh_token_lifetime
    display = {k: claims[k] for k in _DISPLAY_CLAIMS if k in claims}
    if not display.keys() & {"name", "email", "preferred_username"}:
        # Providers that keep profile claims out of the ID token (oidc-provider's default) serve them from
        # UserInfo; ask once, at sign-in, and keep them only when they are about the same subject (§5.3.2).
        info = await svc.oidc.userinfo(tokens.access_token)
        if info.get("sub") == claims["sub"]:
            display.update({k: info[k] for k in _DISPLAY_CLAIMS if k in info})
    # Without a refresh token the session cannot outlive its access token.
    session = Session(
        sub=str(claims["sub"]),
        claims=display,
        access_token=tokens.access_token,
        access_expires_at=tokens.expires_at,
        access_refresh_at=refresh_due_at(now, tokens.expires_at),
        refresh_token=tokens.refresh_token,
        refresh_expires_at=refresh_expires,
        scope=tokens.scope or " ".join(svc.settings.scopes),
        created_at=now,
        last_seen_at=now,
        expires_at=svc.sessions.absolute_end(now, refresh_expires if tokens.refresh_token else tokens.expires_at),
        logout_sid=secrets.token_urlsafe(16),
        oidc_sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
    )
    session_id = new_session_id()
    if await svc.sessions.save(session_id, session) is None:  # 256 random bits: never taken in practice
        raise SessionStoreUnavailable("The session could not be created; sign in again.")
    metrics.sessions_created.inc()
    log.info("session created", extra={"sub_hash": hashlib.sha256(session.sub.encode()).hexdigest()[:12]})
    return session_id


async def session_info(request: Request) -> Response:
    svc = services(request)
    s = (await require_session(request)).session
    now = svc.sessions.clock()
    remaining = max(0, int(svc.sessions.remaining(s, now)))
    body: dict[str, Any] = {
        "authenticated": True,
        "user": {"sub": s.sub, **s.claims},
        "scopes": s.scope.split(),
        "expires_at": int(now) + remaining,
        "expires_in": remaining,
        "absolute_expires_at": int(s.expires_at),
        "logout_url": f"/auth/logout?sid={s.logout_sid}",
        "is_admin": s.sub in svc.settings.admin_subjects,
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def logout_post(request: Request) -> Response:
    svc = services(request)
    current = await current_session(request)
    logout_url = await _end_session(request, current) if current else None
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
        if not constant_time_equals(sid, current.session.logout_sid):
            raise BadRequest("The logout link is not valid for this session.", code="invalid_logout_request")
        target = await _end_session(request, current) or "/"
    response = RedirectResponse(target, status_code=302, headers=_NO_STORE)
    clear_session_cookie(response, svc)
    return response


async def _end_session(request: Request, current: CurrentSession) -> str | None:
    svc = services(request)
    # The record goes first, so every replica stops serving the session at once (revocation can take up to
    # two provider round trips); then the tokens are revoked, which is how access really ends at the
    # provider (RFC 10017 §6.1.2.3).
    await svc.sessions.delete(current.id)
    await _revoke_all(request, current.session.refresh_token, current.session.access_token)
    log.info("session ended by logout")
    try:
        return await svc.oidc.end_session_url()
    except BffError:
        return None


async def _revoke_all(request: Request, refresh_token: str | None, access_token: str | None) -> None:
    oidc = services(request).oidc
    if refresh_token:
        await oidc.revoke(refresh_token, "refresh_token")
    if access_token:
        await oidc.revoke(access_token, "access_token")


routes = [
    Route("/auth/login", login, methods=["GET"]),
    Route("/auth/callback", callback, methods=["GET"]),
    Route("/auth/session", session_info, methods=["GET"]),
    Route("/auth/logout", logout_post, methods=["POST"]),
    Route("/auth/logout", logout_get, methods=["GET"]),
    *mobile.routes,
]
