"""What handlers read from a request and set on a response: the services, the current session, the
client's address, the body (bounded) and its media type, the session cookie, a safe ``return_to``.

A request is authenticated by exactly one credential: ``Authorization: Session <token>`` when it carries
that header (native apps, :mod:`bff.routes.mobile`), otherwise the session cookie. With the header present
the cookie is never looked at, even when the header's token is invalid, so a request cannot fall back to
ambient authority that the CSRF middleware let through on the header's account.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from bff.errors import BadRequest, Forbidden, NotAuthenticated, session_expired
from bff.services.container import Services
from bff.sessions import Session

_MAX_RETURN_TO = 512  # it is stored in the login state: every character costs Redis bytes per anonymous start
SESSION_SCHEME = "Session"


def services(conn: HTTPConnection) -> Services:
    """The services the lifespan opened (:func:`bff.services.container.open_services`)."""
    svc = conn.app.state.services
    assert isinstance(svc, Services)
    return svc


def client_address(conn: HTTPConnection) -> str:
    """Who a request counts against: its address as :mod:`bff.web.forwarded` resolved it; an IPv6
    client's /64, the smallest block one subscriber is usually given."""
    host = conn.client.host if conn.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class CurrentSession:
    id: str
    session: Session


def session_authorization(values: Sequence[str]) -> str | None:
    """The token of an ``Authorization: Session <token>`` header (scheme case-insensitive, RFC 9110 §11.1).

    None when no Authorization header uses the Session scheme; "" (never a valid token) when one does but
    the header is repeated or has no token, so such a request is still authenticated by the header alone.
    """
    session_headers = [v for v in values if v.strip().partition(" ")[0].lower() == SESSION_SCHEME.lower()]
    if not session_headers:
        return None
    if len(values) != 1:
        return ""
    return session_headers[0].strip().partition(" ")[2].strip()


def authenticated_by_header(request: Request) -> bool:
    return session_authorization(request.headers.getlist("authorization")) is not None


async def current_session(request: Request) -> CurrentSession | None:
    """The signed-in session named by the request's Session header or else its cookie, or None."""
    svc = services(request)
    token = session_authorization(request.headers.getlist("authorization"))
    if token is None:
        token = request.cookies.get(svc.settings.session_cookie_name)
    session_id = svc.session_codec.unsign(token)
    if session_id is None:
        return None
    # What logs may say about the session: a short hash, never the id (bff.logs's access line).
    request.scope["state"]["session_hash"] = hashlib.sha256(session_id.encode()).hexdigest()[:12]
    session = await svc.sessions.load(session_id)
    if session is None:
        request.scope["state"]["session_ended"] = True
        return None
    return CurrentSession(session_id, session)


async def require_session(request: Request) -> CurrentSession:
    """The current session, or 401: ``session_expired`` when the request names a session that has ended
    (so the SPA can say so), ``not_authenticated`` when it names none."""
    current = await current_session(request)
    if current is not None:
        return current
    if request.scope["state"].get("session_ended"):
        raise session_expired()
    raise NotAuthenticated("Sign in first.", code="not_authenticated")


def require_admin(svc: Services, session: Session) -> None:
    """403 unless the session's subject is in ``BFF_ADMIN_SUBJECTS`` (the administrator-only routes: grants,
    transaction limits, other users' sessions); with none configured, every one of them is off."""
    if not svc.settings.admin_subjects:
        raise Forbidden("Administration is turned off on this server.", code="limit_management_disabled")
    if not session.sub or session.sub not in svc.settings.admin_subjects:
        raise Forbidden("Only administrators may do this.", code="forbidden")


def set_session_cookie(response: Response, svc: Services, session_id: str) -> None:
    s = svc.settings
    response.set_cookie(
        s.session_cookie_name,
        svc.session_codec.sign(session_id),
        max_age=s.session_max_lifetime,
        path="/",
        secure=s.secure_cookies,
        httponly=True,
        samesite=s.cookie_samesite,
    )


def clear_session_cookie(response: Response, svc: Services) -> None:
    s = svc.settings
    response.delete_cookie(
        s.session_cookie_name, path="/", secure=s.secure_cookies, httponly=True, samesite=s.cookie_samesite
    )


def safe_return_to(value: str | None) -> str:
    """A local path to send the browser back to, or 400: never an open redirector (RFC 9700 §4.11.1)."""
    if not value:
        return "/"
    for candidate in (value, unquote(value)):  # also refuse what becomes a trick once decoded
        if (
            len(candidate) > _MAX_RETURN_TO
            or not candidate.startswith("/")
            or candidate.startswith("//")
            or "\\" in candidate
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in candidate)
        ):
            raise BadRequest("return_to must be a local path such as /dashboard.", code="invalid_return_to")
    return value


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# -- the body --------------------------------------------------------------------------------------------
#
# One way to read a body, bounded: a declared Content-Length over the bound (or not a number) is refused
# before anything is read; a body without one (chunked) is counted as it arrives and refused as soon as it
# passes the bound, so a client can never make a process buffer more than `limit` bytes. Chunks are joined
# once, at the end (appending to a bytes object per chunk is quadratic). A client that hangs up mid-body
# makes Starlette raise ClientDisconnect here; it is deliberately not caught: bff.web.edge turns it into a
# 499 access line, never a 500.


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters (``application/json; charset=utf-8`` →
    ``application/json``); "" when there is no ``Content-Type``."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


class BodyTooLarge(Exception):
    """The body is larger than the caller's bound, or its ``Content-Length`` is not a number."""


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
