"""The authorization endpoint (`/oidc/auth`): request validation, the sign-in chooser, the code.

Follows node `oidc-provider` and the RFCs: an unknown client or unregistered redirect URI gets an HTML
error page and is never redirected to (RFC 6749 §4.1.2.1); every other error is redirected with `state`
and `iss` (RFC 9207). PKCE with S256 is mandatory (RFC 7636; the Kryptos docs say "Always S256").
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bff_dev.emulator.config import DEFAULT_SCOPES, EmulatorClient
from bff_dev.emulator.pages import error_page, login_page
from bff_dev.emulator.state import AuthCode, EmulatorState

# base64url(SHA-256(verifier)) is 43 characters; RFC 7636 §4.2 allows 43-128 of the unreserved set.
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


def add_query(url: str, params: dict[str, str]) -> str:
    """Append parameters to a URL, keeping any query it already has (RFC 6749 §3.1.2)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class _AuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _html_error(error: str, description: str) -> Response:
    return _no_store(HTMLResponse(error_page(error, description), status_code=400))


def _check_client(state: EmulatorState, params: dict[str, str]) -> EmulatorClient | Response:
    client = state.clients.get(params.get("client_id", ""))
    if client is None:
        return _html_error("invalid_client", "client is invalid: unknown client_id")
    if params.get("redirect_uri", "") not in client.redirect_uris:
        return _html_error("invalid_redirect_uri", "redirect_uri did not match any of the client's registered URIs")
    return client


def _granted_scope(params: dict[str, str]) -> list[str]:
    """Requested scopes the provider knows, in request order; unknown ones are dropped (oidc-provider)."""
    requested = params.get("scope", "").split()
    if params.get("response_type") is None:
        raise _AuthError("invalid_request", "missing required parameter 'response_type'")
    if params["response_type"] != "code":
        raise _AuthError("unsupported_response_type", "unsupported response_type requested")
    if params.get("response_mode", "query") != "query":
        raise _AuthError("invalid_request", "response_mode not supported, only 'query' is")
    if "request" in params or "request_uri" in params:
        raise _AuthError("request_not_supported", "request objects are not supported")
    if "openid" not in requested:
        raise _AuthError("invalid_request", "openid scope must be requested when using the OpenID Connect flow")
    challenge = params.get("code_challenge")
    if not challenge:
        raise _AuthError("invalid_request", "Authorization Server policy requires PKCE to be used for this request")
    method = params.get("code_challenge_method")
    if method != "S256":
        raise _AuthError("invalid_request", "code_challenge_method must be S256 (plain is not allowed)")
    if not _CHALLENGE.match(challenge):
        raise _AuthError("invalid_request", "code_challenge must be 43-128 characters of the unreserved set")
    if params.get("prompt") == "none":
        raise _AuthError("login_required", "End-User authentication is required")
    return list(dict.fromkeys(s for s in requested if s in DEFAULT_SCOPES))


def _redirect_error(
    state: EmulatorState, redirect_uri: str, params: dict[str, str], error: _AuthError, status: int
) -> Response:
    query = {"error": error.error, "error_description": error.description}
    if "state" in params:
        query["state"] = params["state"]
    query["iss"] = state.config.issuer
    return _no_store(RedirectResponse(add_query(redirect_uri, query), status_code=status))


def _approve(state: EmulatorState, params: dict[str, str], scope: list[str], username: str, status: int) -> Response:
    user = state.users_by_username[username]
    session = state.start_session(user.sub)
    code = AuthCode(
        code=secrets.token_urlsafe(32),
        client_id=params["client_id"],
        redirect_uri=params["redirect_uri"],
        sub=user.sub,
        scope=scope,
        nonce=params.get("nonce"),
        code_challenge=params["code_challenge"],
        sid=session.sid,
        auth_time=session.auth_time,
        expires_at=state.now() + state.settings.code_ttl,
    )
    state.codes[code.code] = code
    query = {"code": code.code}
    if "state" in params:
        query["state"] = params["state"]
    query["iss"] = state.config.issuer
    return _no_store(RedirectResponse(add_query(params["redirect_uri"], query), status_code=status))


async def authorize(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    if request.method == "POST":
        form = await request.form()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        status = 303  # after a form POST the browser must GET the redirect target
    else:
        params = dict(request.query_params)
        status = 302
    checked = _check_client(state, params)
    if isinstance(checked, Response):
        return checked
    try:
        scope = _granted_scope(params)
    except _AuthError as exc:
        return _redirect_error(state, params["redirect_uri"], params, exc, status)

    if request.method == "POST":
        if params.get("deny"):
            denied = _AuthError("access_denied", "End-User denied the authorization request")
            return _redirect_error(state, params["redirect_uri"], params, denied, status)
        username = params.get("username", "")
        if username not in state.users_by_username:
            return _html_error("invalid_request", "unknown user")
        return _approve(state, params, scope, username, status)

    hint = params.get("login_hint")
    if hint and hint in state.users_by_username:
        return _approve(state, params, scope, hint, status)
    carried = {k: v for k, v in params.items() if k not in ("username", "deny")}
    page = login_page(
        action=state.config.issuer + "/auth",
        client_id=checked.client_id,
        params=carried,
        users=state.config.users,
    )
    return _no_store(HTMLResponse(page))
