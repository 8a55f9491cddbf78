"""The Kryptos Connect widget stand-in: the page a SPA opens as a popup, and its `X-LINK-TOKEN` backend.

Upstream this is the `@kryptos_connect/web-sdk` UI calling endpoints documented only on a page that is not
available ("Link Token API"), so the paths under `/connect/widget/` are the emulator's own. The flow is the
overview's: a link token that carries an existing grant goes straight to the INTEGRATION step, whose
"Done" reports `public_token: null` (the SDK's `onConnectSuccess(null)`); otherwise Guest login (a new Guest
user and workspace made on the spot) or email login with a one-time code (shown on the page: it stands in
for the email), then consent, which mints the public token.

The page reports to `window.opener` with `postMessage({source: "kryptos-connect", event, ...}, origin)`, where
`origin` must be the origin of one of the client's registered redirect URIs; otherwise the page refuses and
carries no script at all. It has no inline script or style (its CSP allows 'self' only): `widget.js` and
`widget.css` are files in `widget_assets/`, served next to it.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from bff_dev.emulator.config import EmulatorUser
from bff_dev.emulator.connect_records import LinkToken, OtpChallenge, iso_z
from bff_dev.emulator.connect_tokens import ConnectError, live_link_token, mint_public_token
from bff_dev.emulator.seed import widget_integrations
from bff_dev.emulator.state import EmulatorState

_ASSETS = Path(__file__).parent / "widget_assets"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the link token is in the page's URL
    "X-Content-Type-Options": "nosniff",
}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# What each scope lets the app do, from the Developer Portal's scope table.
SCOPE_TEXT = {
    "openid": "Confirm who you are",
    "profile": "See your name, language and transaction limit",
    "offline_access": "Keep access while you are away",
    "email": "See your email address",
    "portfolios:read": "See your holdings and balances",
    "transactions:read": "See your transactions",
    "integrations:read": "See your connected wallets and exchanges",
    "tax:read": "See your tax reports",
    "accounting:read": "See your ledger entries",
    "reports:read": "See your reports",
    "workspace:read": "See your workspace settings",
    "users:read": "See your user profile and preferences",
}


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    state.record_request(request)
    state.count("connect_api")
    return state


def origin_of(url: str) -> str | None:
    """The serialized origin (scheme://host[:port], default port left out) of an http(s) URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port in (None, 80 if scheme == "http" else 443) else f":{port}")


def _allowed_origin(state: EmulatorState, link: LinkToken, origin: str) -> bool:
    """`origin` is exactly an origin (no path, query or user info) of one of the client's redirect URIs."""
    registered = {origin_of(uri) for uri in state.clients[link.client_id].redirect_uris}
    return bool(origin) and origin == origin_of(origin) and origin in registered


# --- the page ------------------------------------------------------------------------------------------


def _document(state: EmulatorState, title: str, main: str, *, script: bool) -> str:
    assets = escape(state.config.connect_api_url + "/widget")
    icon = escape(state.config.base_url + "/logos/kryptos.svg")
    tag = f'<script src="{assets}/widget.js" defer></script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{escape(title)}</title><link rel="icon" href="{icon}">'
        f'<link rel="stylesheet" href="{assets}/widget.css">{tag}</head>'
        f'<body>{main}</body></html>'
    )  # fmt: skip


_BRAND = '<header class="brand"><span class="logo">K</span>Kryptos Connect<span class="tag">emulator</span></header>'


def _refusal(state: EmulatorState, code: str, text: str) -> Response:
    main = (
        f'<main id="widget" data-error="{escape(code)}">{_BRAND}'
        f'<section id="step-error"><h1>This connection cannot start</h1>'
        f'<p id="error-message" class="error" role="alert">{escape(text)} ({escape(code)})</p></section></main>'
    )
    return HTMLResponse(_document(state, "Kryptos Connect", main, script=False), 400, headers=_PAGE_HEADERS)


def _widget_main(state: EmulatorState, link: LinkToken, origin: str, expired: bool) -> str:
    client = escape(link.client_id)
    # A grant revoked since the link token was made no longer counts: the user connects afresh.
    existing = link.existing_grant_id is not None and state.grant_is_live(state.connect_grants[link.existing_grant_id])
    first = "error" if expired else "integration" if existing else "choose"

    def hidden(step: str) -> str:
        return "" if step == first else " hidden"

    scopes = "".join(
        f'<li><span class="scope">{escape(s)}</span>{escape(SCOPE_TEXT.get(s, s))}</li>' for s in link.scopes.split()
    )
    data = {
        "api": state.config.connect_api_url + "/widget",
        "link-token": link.token,
        "origin": origin,
        "existing-grant": "true" if existing else "false",
        "error": "TOKEN_EXPIRED" if expired else "",
    }
    attributes = " ".join(f'data-{name}="{escape(value)}"' for name, value in data.items())
    return (
        f'<main id="widget" {attributes}>{_BRAND}<p class="client">for <b>{client}</b></p>'
        f'<section id="step-choose"{hidden("choose")}><h1>Connect your account</h1>'
        '<p class="sub">Continue without an account, or sign in with your Kryptos email.</p>'
        '<button id="guest-login" class="primary" type="button">Continue as Guest</button>'
        '<p class="divider">or</p><form id="email-form" novalidate><label for="email">Email</label>'
        '<input id="email" name="email" type="email" autocomplete="email" required>'
        '<button id="send-otp" type="submit">Email login</button></form></section>'
        f'<section id="step-otp"{hidden("otp")}><h1>Check your email</h1>'
        '<p class="sub">We sent a one-time code to <b id="otp-email"></b>.</p>'
        '<p class="notice">Emulator: no email is sent. Your code is <output id="otp-code"></output></p>'
        '<form id="otp-form" novalidate><label for="otp">One-time code</label>'
        '<input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code" required>'
        '<button id="verify-otp" class="primary" type="submit">Verify</button></form></section>'
        f'<section id="step-consent"{hidden("consent")}><h1>Allow access</h1>'
        f'<p class="sub"><b>{client}</b> asks to:</p><ul class="scopes">{scopes}</ul>'
        '<button id="allow" class="primary" type="button">Allow</button></section>'
        f'<section id="step-integration"{hidden("integration")}><h1>Already connected</h1>'
        f'<p class="sub">Your Kryptos account is already connected to <b>{client}</b>.</p>'
        '<button id="done" class="primary" type="button">Done</button></section>'
        f'<section id="step-error"{hidden("error")}><h1>Something went wrong</h1>'
        '<p id="error-message" class="error" role="alert">'
        f'{"This link has expired. Start again from the app. (TOKEN_EXPIRED)" if expired else ""}</p>'
        '<button id="close" type="button">Close</button></section>'
        '<p id="message" class="error" role="alert"></p>'
        f'<button id="cancel" class="link" type="button"{" hidden" if expired else ""}>Cancel</button></main>'
    )  # fmt: skip


async def page(request: Request) -> Response:
    """`GET /connect/widget?link_token=…&origin=…`"""
    state = _state(request)
    link = state.link_tokens.get(request.query_params.get("link_token", ""))
    if link is None:
        return _refusal(state, "INVALID_TOKEN", "This link is not valid. Start again from the app.")
    origin = request.query_params.get("origin", "")
    if not _allowed_origin(state, link, origin):
        text = "The app's origin is not one of its registered redirect URI origins."
        return _refusal(state, "ORIGIN_NOT_ALLOWED", text)
    main = _widget_main(state, link, origin, expired=state.now() >= link.expires_at)
    return HTMLResponse(_document(state, "Kryptos Connect", main, script=True), headers=_PAGE_HEADERS)


def _asset(request: Request, name: str, media_type: str) -> Response:
    _state(request)
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return Response((_ASSETS / name).read_bytes(), media_type=media_type, headers=headers)


async def script(request: Request) -> Response:
    return _asset(request, "widget.js", "text/javascript")


async def stylesheet(request: Request) -> Response:
    return _asset(request, "widget.css", "text/css")


# --- the X-LINK-TOKEN backend --------------------------------------------------------------------------


async def _session(request: Request) -> tuple[EmulatorState, LinkToken, dict[str, Any]]:
    state = _state(request)
    link = live_link_token(state, request.headers.get("x-link-token", ""))
    raw = await request.body()
    try:
        body: Any = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ConnectError(400, "Request body must be a JSON object", "VALIDATION_ERROR")
    return state, link, body


def _signed_in(link: LinkToken, user: EmulatorUser) -> Response:
    link.sub = user.sub
    data = {
        "user_id": user.sub,
        "workspace_id": user.workspace_id,
        "workspace_name": user.workspace_name,
        "account_type": user.account_type,
    }
    return JSONResponse({"success": True, "data": data})


def _new_user(state: EmulatorState, link: LinkToken, email: str | None) -> EmulatorUser:
    """A user made in the widget: a Guest when `email` is None, else a Linked user with that email."""
    tag = secrets.token_hex(6)
    now = state.now()
    common: dict[str, Any] = {
        "created_in_widget": True,
        "updated_at": int(now),
        "integrations": widget_integrations(tag, int(now * 1000)),
    }
    if email is None:
        user = EmulatorUser(
            username=f"guest_{tag}", sub=f"anon_{tag}", name=f"Guest {tag[:4]}",
            # Guests have no email of their own; this address only fills the `email` claim.
            email=f"anon_{tag}@guest.kryptos.io", email_verified=False, account_type="guest",
            workspace_id=f"ws_guest_{tag}", workspace_name="Guest workspace", workspace_type="guest", **common,
        )  # fmt: skip
    else:
        local = email.split("@", 1)[0]
        user = EmulatorUser(
            username=email, sub=f"user_{tag}", name=local, email=email, account_type="linked",
            workspace_id=f"ws_{tag}", workspace_name=f"{local}'s Workspace", workspace_type="personal", **common,
        )  # fmt: skip
    state.add_user(user, link.client_id)
    return user


async def guest_login(request: Request) -> Response:
    """`POST /connect/widget/guest`: a new Guest user and workspace, signed in to this widget session."""
    try:
        state, link, _ = await _session(request)
    except ConnectError as exc:
        return exc.response()
    return _signed_in(link, _new_user(state, link, None))


async def request_otp(request: Request) -> Response:
    """`POST /connect/widget/otp/request {email}`: a one-time code, returned instead of emailed."""
    try:
        _, link, body = await _session(request)
        email = body.get("email")
        if not isinstance(email, str) or len(email.strip()) > 254 or not _EMAIL.fullmatch(email.strip()):
            raise ConnectError(400, "A valid email address is required", "VALIDATION_ERROR")
    except ConnectError as exc:
        return exc.response()
    link.otp = OtpChallenge(email=email.strip(), code=f"{secrets.randbelow(1_000_000):06d}")
    return JSONResponse({"success": True, "data": {"email": link.otp.email, "otp": link.otp.code}})


async def verify_otp(request: Request) -> Response:
    """`POST /connect/widget/otp/verify {email, otp}`: the email's user (a new Linked one if unknown)."""
    try:
        state, link, body = await _session(request)
        if link.otp is None:
            raise ConnectError(400, "Request a one-time code first", "OTP_NOT_REQUESTED")
        email, code = body.get("email"), body.get("otp")
        if not isinstance(email, str) or email.strip().casefold() != link.otp.email.casefold():
            raise ConnectError(400, "The email does not match the one the code was sent to", "EMAIL_MISMATCH")
        if not isinstance(code, str) or not hmac.compare_digest(code.strip().encode(), link.otp.code.encode()):
            raise ConnectError(400, "The one-time code is not correct", "INVALID_OTP")
    except ConnectError as exc:
        return exc.response()
    email = link.otp.email
    link.otp = None  # one code, one sign-in
    return _signed_in(link, state.user_by_email(email) or _new_user(state, link, email))


async def consent(request: Request) -> Response:
    """`POST /connect/widget/consent`: the signed-in user allows the scopes; a public token for the app."""
    try:
        state, link, _ = await _session(request)
        public = mint_public_token(state, link)
    except ConnectError as exc:
        return exc.response()
    data = {"public_token": public.token, "expires_at": iso_z(public.expires_at)}
    return JSONResponse({"success": True, "data": data})


routes = [
    Route("/widget", page, methods=["GET"]),
    Route("/widget/widget.js", script, methods=["GET"]),
    Route("/widget/widget.css", stylesheet, methods=["GET"]),
    Route("/widget/guest", guest_login, methods=["POST"]),
    Route("/widget/otp/request", request_otp, methods=["POST"]),
    Route("/widget/otp/verify", verify_otp, methods=["POST"]),
    Route("/widget/consent", consent, methods=["POST"]),
]
