"""A user's sessions ("Your devices") and an administrator's force sign-out: thin glue over
:class:`bff.services.devices.Devices`.

* ``GET /auth/sessions``: the caller's live sessions, browser and app alike;
* ``DELETE /auth/sessions/{handle}``: end one of them (the caller's own included: its cookie is cleared);
* ``POST /auth/sessions/end-others``: end all but the caller's;
* ``GET /api/admin/users/{sub}/sessions``, ``DELETE /api/admin/users/{sub}/sessions`` (every one: force
  sign-out) and ``DELETE /api/admin/users/{sub}/sessions/{handle}``: the same for any user, for
  ``BFF_ADMIN_SUBJECTS`` only.

They are SPA calls: ``X-CSRF: 1`` and, for the state-changing ones, an allowed ``Origin`` (:mod:`bff.web.csrf`),
or a native app's ``Authorization: Session``. A handle that is not one of the user's live sessions (another
user's, a made-up one, one already ended) is 404 ``session_not_found``, one answer for all.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bff.errors import NotAuthenticated, NotFound
from bff.proxy.validation import invalid_parameter
from bff.sessions.store import session_handle
from bff.web.request import (
    CurrentSession,
    authenticated_by_header,
    clear_session_cookie,
    require_admin,
    require_session,
    services,
)

_HANDLE = re.compile(r"[0-9a-f]{32}")
_SUB = re.compile(r"[\x20-\x7e]{1,255}")  # OpenID Connect Core §2: at most 255 ASCII characters (printable here)
_NO_STORE = {"Cache-Control": "no-store"}


async def _signed_in(request: Request) -> CurrentSession:
    current = await require_session(request)
    if not current.session.signed_in_with_oidc:  # a Connect-only session: nobody is signed in to list
        raise NotAuthenticated("Sign in first.", code="not_authenticated")
    return current


async def _admin(request: Request) -> tuple[CurrentSession, str]:
    current = await _signed_in(request)
    require_admin(services(request), current.session)
    sub = request.path_params["sub"]
    if not _SUB.fullmatch(sub):
        raise invalid_parameter("sub", "is not a subject identifier")
    return current, sub


def _handle(request: Request) -> str:
    handle = request.path_params["handle"]
    if not _HANDLE.fullmatch(handle):
        raise _not_found()
    return str(handle)


def _not_found() -> NotFound:
    return NotFound("No such session among this user's live sessions.", code="session_not_found")


def _answer(request: Request, current: CurrentSession, body: dict[str, Any], ended: list[str]) -> Response:
    response = JSONResponse(body, headers=_NO_STORE)
    if session_handle(current.id) in ended and not authenticated_by_header(request):
        clear_session_cookie(response, services(request))  # the caller ended its own session
    return response


async def list_own(request: Request) -> Response:
    current = await _signed_in(request)
    listing = await services(request).devices.listing(current.session.sub, session_handle(current.id))
    return JSONResponse({"sessions": listing}, headers=_NO_STORE)


async def end_own(request: Request) -> Response:
    current = await _signed_in(request)
    handle = _handle(request)
    sub = current.session.sub
    ended = await services(request).devices.end_one(sub, handle, actor=sub, by="user")
    if ended is None:
        raise _not_found()
    return _answer(request, current, {"ended": 1}, [ended])


async def end_others(request: Request) -> Response:
    current = await _signed_in(request)
    sub = current.session.sub
    ended = await services(request).devices.end_all(sub, actor=sub, by="user", keep=session_handle(current.id))
    return _answer(request, current, {"ended": len(ended)}, ended)


async def admin_list(request: Request) -> Response:
    current, sub = await _admin(request)
    mine = session_handle(current.id) if sub == current.session.sub else None
    listing = await services(request).devices.listing(sub, mine)
    return JSONResponse({"sub": sub, "sessions": listing}, headers=_NO_STORE)


async def admin_end_all(request: Request) -> Response:
    current, sub = await _admin(request)
    ended = await services(request).devices.end_all(sub, actor=current.session.sub, by="admin")
    return _answer(request, current, {"sub": sub, "ended": len(ended)}, ended)


async def admin_end_one(request: Request) -> Response:
    current, sub = await _admin(request)
    handle = _handle(request)
    ended = await services(request).devices.end_one(sub, handle, actor=current.session.sub, by="admin")
    if ended is None:
        raise _not_found()
    return _answer(request, current, {"sub": sub, "ended": 1}, [ended])
