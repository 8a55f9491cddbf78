"""Native apps (RFC 8252): sign-in through the system browser, a one-time hand-off code, a session token.

The app never holds a Kryptos token or the client secret, exactly like the SPA. The sequence::

    app ── GET /auth/login?client=mobile&redirect_uri&code_challenge&state ──▶ bff   (system browser)
    bff ⇄ Kryptos: the same code + PKCE + state + nonce flow as for the browser
    bff ── 302 <redirect_uri>?code=<one-time code>&state=<app state> ──▶ app         (claimed redirect)
    app ── POST /auth/mobile/token (code, code_verifier, redirect_uri) ──▶ bff
    bff ── {"session_token", "expires_in", "token_type": "Session"} ──▶ app
    app ── Authorization: Session <session_token> on /api/..., /auth/session, POST /auth/logout

This module owns the app-facing half: validating the start request (exact redirect URI from
``BFF_MOBILE_REDIRECT_URIS``, S256 only), the hand-off record (encrypted, 60 s, single use by
get-and-delete) and the token endpoint. The upstream half (state, binding cookie, code exchange, ID token,
session creation) is the browser's, in :mod:`bff.auth_routes`.

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
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bff.config import Settings
from bff.errors import BadRequest
from bff.request_body import BodyTooLarge, read_limited
from bff.sessions.crypto import Keyring
from bff.sessions.store import KeyValueStore
from bff.web import constant_time_equals, services

log = logging.getLogger("bff.mobile")

HANDOFF_TTL = 60  # seconds a hand-off code may wait for its exchange
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(SHA-256(verifier)), unpadded (RFC 7636 §4.2)
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 §4.1
_APP_STATE = re.compile(r"[\x20-\x7e]{1,512}")  # RFC 6749 Appendix A.5: VSCHAR, bounded
_MAX_BODY = 8 * 1024
_MAX_FIELD = 2048
_TOKEN_FIELDS = ("code", "code_verifier", "redirect_uri")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class MobileLogin:
    """What a native app asked for at the start; kept in the (encrypted) login state's ``extra``."""

    redirect_uri: str
    code_challenge: str
    state: str

    def to_extra(self) -> dict[str, Any]:
        return {"mobile": {"ru": self.redirect_uri, "cc": self.code_challenge, "st": self.state}}

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> MobileLogin | None:
        data = extra.get("mobile")
        if not isinstance(data, dict):
            return None
        try:
            return cls(redirect_uri=str(data["ru"]), code_challenge=str(data["cc"]), state=str(data["st"]))
        except KeyError:
            return None


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


@dataclass(frozen=True, slots=True)
class Handoff:
    session_id: str
    code_challenge: str
    redirect_uri: str
    created_at: float


def _handoff_key(code: str) -> str:
    # Hashed like every other id: reading the store yields no usable code.
    return f"bff:mobile:{hashlib.sha256(code.encode()).hexdigest()}"


class HandoffStore:
    """Hand-off records on any :class:`KeyValueStore`, encrypted with the key name as associated data."""

    def __init__(self, store: KeyValueStore, keyring: Keyring, clock: Callable[[], float]) -> None:
        self.store = store
        self._keyring = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return f"HandoffStore(store={self.store!r})"

    async def issue(self, session_id: str, login: MobileLogin) -> str:
        code = secrets.token_urlsafe(32)  # 256 bits
        key = _handoff_key(code)
        record = {"s": session_id, "cc": login.code_challenge, "ru": login.redirect_uri, "ca": self._clock()}
        blob = self._keyring.encrypt(json.dumps(record, separators=(",", ":")).encode(), key.encode())
        await self.store.set(key, blob, ttl=HANDOFF_TTL)
        return code

    async def take(self, code: str) -> Handoff | None:
        """The record, removed in the same step (single use); None when unknown, used or unreadable."""
        key = _handoff_key(code)
        blob = await self.store.get_and_delete(key)
        plain = self._keyring.decrypt(blob, key.encode()) if blob is not None else None
        if plain is None:
            return None
        try:
            d = json.loads(plain)
            return Handoff(str(d["s"]), str(d["cc"]), str(d["ru"]), float(d["ca"]))
        except (ValueError, KeyError, TypeError):
            return None

    def expired(self, handoff: Handoff) -> bool:
        # Checked against our clock as well as the store's TTL, like login state.
        return self._clock() - handoff.created_at > HANDOFF_TTL


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _invalid_request(detail: str) -> BadRequest:
    return BadRequest(detail, code="invalid_request")


def _invalid_grant() -> BadRequest:
    # One answer for every reason: which check failed is nothing a code thief should learn.
    return BadRequest("The code is invalid, expired, already used, or does not match.", code="invalid_grant")


async def _read_fields(request: Request) -> dict[str, str]:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in ("application/x-www-form-urlencoded", "application/json"):
        raise _invalid_request("Send the fields as application/x-www-form-urlencoded or application/json.")
    try:
        # A client hanging up mid-body raises ClientDisconnect through here: a 499 access line (bff.edge).
        body = await read_limited(request, _MAX_BODY)
    except BodyTooLarge:
        raise _invalid_request("The request body is too large.") from None
    try:
        if media_type == "application/json":
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
    await svc.limits.check(request, "mobile_token")  # first: a refused request reads and burns nothing
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
        await svc.sessions.delete(handoff.session_id)
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


routes = [Route("/auth/mobile/token", token, methods=["POST"])]
