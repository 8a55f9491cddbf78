"""Native apps (RFC 8252): sign-in through the system browser, a one-time hand-off code, a session token.

The app never holds a Kryptos token or the client secret, exactly like the SPA. The sequence::

    app ── GET /auth/login?client=mobile&redirect_uri&code_challenge&state ──▶ bff   (system browser)
    bff ⇄ Kryptos: the same code + PKCE + state + nonce flow as for the browser
    bff ── 302 <redirect_uri>?code=<one-time code>&state=<app state> ──▶ app         (claimed redirect)
    app ── POST /auth/mobile/token (code, code_verifier, redirect_uri) ──▶ bff
    bff ── {"session_token", "expires_in", "token_type": "Session"} ──▶ app
    app ── Authorization: Session <session_token> on /api/..., /auth/session, POST /auth/logout

This module owns the app-facing half: validating the start request (exact redirect URI from
``BFF_MOBILE_REDIRECT_URIS``, S256 only), the redirects to the app and the token endpoint. The upstream
half (state, binding cookie, code exchange, ID token, session creation) is the browser's
(:class:`bff.services.login.LoginService`); the records are :mod:`bff.sessions.handoff`.

Why it holds: the redirect to a claimed URI may be intercepted by another app (RFC 8252 §8.1), so the
code it carries is useless without the verifier behind the app's S256 challenge (RFC 7636); a failed
exchange burns the code *and* deletes the session it would have opened. Until the redirect URI is known to
be one of ours, nothing is ever redirected to it (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bff.config import Settings
from bff.errors import BadRequest
from bff.sessions.handoff import MobileLogin
from bff.web.request import BodyTooLarge, client_address, constant_time_equals, media_type, read_limited, services

log = logging.getLogger("bff.mobile")

_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256(verifier)), unpadded (RFC 7636 §4.2)
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_APP_STATE = re.compile(r"[\x20-\x7e]{1,512}")  # RFC 6749 Appendix A.5: VSCHAR, bounded
_MAX_BODY = 8 * 1024
_MAX_FIELD = 2048
_TOKEN_FIELDS = ("code", "code_verifier", "redirect_uri")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}


def parse_login(params: QueryParams, settings: Settings) -> MobileLogin:
    """Validate ``/auth/login?client=mobile&…``; every failure is a 400 here, never a redirect to the app."""
    if not settings.mobile_redirect_uris:
        raise BadRequest("Sign-in for mobile apps is turned off on this server.", code="mobile_disabled")
    for name in ("redirect_uri", "code_challenge", "code_challenge_method", "state"):
        if len(params.getlist(name)) > 1:  # RFC 6749 §3.1: parameters MUST NOT be repeated
            raise _bad_parameter(name, f"{name} is given more than once.")
    redirect_uri = params.get("redirect_uri") or ""
    # Exact string comparison (RFC 8252 §8.10, RFC 9700 §4.1.3): no prefix, case or normalisation leeway.
    if not any(constant_time_equals(redirect_uri, allowed) for allowed in settings.mobile_redirect_uris):
        raise BadRequest("redirect_uri is not a registered app redirect URI.", code="invalid_redirect_uri")
    if params.get("code_challenge_method") != "S256":
        # `plain` would put the verifier itself in the browser's URL (RFC 9700 §2.1.1).
        raise _bad_parameter("code_challenge_method", "code_challenge_method must be S256.")
    challenge = params.get("code_challenge") or ""
    if not _CHALLENGE.fullmatch(challenge):
        raise _bad_parameter(
            "code_challenge", "code_challenge must be the 43-character base64url SHA-256 of the code verifier."
        )
    state = params.get("state") or ""
    if not _APP_STATE.fullmatch(state):
        raise _bad_parameter("state", "state is required: 1 to 512 printable ASCII characters.")
    if not redirect_uri.startswith("https:") and any("none" in p.split() for p in params.getlist("prompt")):
        # RFC 8252 §8.6: any app can claim a private-use scheme, start this very request itself and, without
        # a page the person must act on, receive the hand-off silently. Only an https app link is proof
        # enough of which app gets it.
        raise _bad_parameter(
            "prompt",
            "prompt=none is not allowed for an app whose redirect URI uses a private-use scheme: "
            "the person must see the sign-in page.",
        )
    return MobileLogin(redirect_uri=redirect_uri, code_challenge=challenge, state=state)


def _bad_parameter(name: str, detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_request", extra={"parameter": name})


def _to_app(login: MobileLogin, params: dict[str, str]) -> RedirectResponse:
    uri = login.redirect_uri
    separator = "" if uri.endswith(("?", "&")) else "&" if "?" in uri else "?"
    return RedirectResponse(uri + separator + urlencode(params), status_code=302, headers=_NO_STORE)


def handoff_redirect(login: MobileLogin, code: str) -> RedirectResponse:
    return _to_app(login, {"code": code, "state": login.state})


def error_redirect(login: MobileLogin, error: str) -> RedirectResponse:
    return _to_app(login, {"error": error, "state": login.state})


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _invalid_request(detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_request")


def _invalid_grant() -> BadRequest:
    # One answer for every reason: which check failed is nothing a code thief should learn.
    return BadRequest("The code is invalid, expired, already used, or does not match.", code="invalid_grant")


async def _read_fields(request: Request) -> dict[str, str]:
    kind = media_type(request)
    if kind not in ("application/x-www-form-urlencoded", "application/json"):
        raise _invalid_request("Send the fields as application/x-www-form-urlencoded or application/json.")
    try:
        # A client hanging up mid-body raises ClientDisconnect through here: a 499 access line (bff.web.edge).
        body = await read_limited(request, _MAX_BODY)
    except BodyTooLarge:
        raise _invalid_request("The request body is too large.") from None
    try:
        if kind == "application/json":
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            pairs = list(data.items())
        else:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=16)
    except ValueError as exc:  # also UnicodeDecodeError and json.JSONDecodeError
        raise _invalid_request("The request body cannot be parsed.") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in _TOKEN_FIELDS:
            continue
        if name in fields or not isinstance(value, str) or not value or len(value) > _MAX_FIELD:
            raise _invalid_request(f"{name} must be given once, as a non-empty string.")
        fields[name] = value
    missing = [name for name in _TOKEN_FIELDS if name not in fields]
    if missing:
        raise _invalid_request(f"Missing: {', '.join(missing)}.")
    return fields


async def token(request: Request) -> Response:
    """``POST /auth/mobile/token``: exchange the hand-off code for a session token (RFC 7636 §4.6)."""
    svc = services(request)
    await svc.limits.check(client_address(request), "mobile_token")  # first: a refused request reads and burns nothing
    fields = await _read_fields(request)
    store = svc.handoffs
    handoff = await store.take(fields["code"])
    if handoff is None:
        raise _invalid_grant()
    verifier = fields["code_verifier"]
    if (
        store.expired(handoff)
        or not constant_time_equals(fields["redirect_uri"], handoff.redirect_uri)
        or not _VERIFIER.fullmatch(verifier)
        or not constant_time_equals(_s256(verifier), handoff.code_challenge)
    ):
        # Whoever holds this code cannot prove they started the login: leave nothing usable behind.
        await svc.sessions.end(handoff.session_id, reason="handoff_refused")
        log.warning("mobile code exchange refused; the session it would have opened is deleted")
        raise _invalid_grant()
    session = await svc.sessions.load(handoff.session_id)
    if session is None:
        raise _invalid_grant()
    log.info("mobile session token issued")
    body = {
        "session_token": svc.session_codec.sign(handoff.session_id),
        "expires_in": max(0, int(svc.sessions.remaining(session))),
        "token_type": "Session",
    }
    return JSONResponse(body, headers=_NO_STORE)
