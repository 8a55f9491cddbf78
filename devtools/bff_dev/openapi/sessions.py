"""A user's sessions ("Your devices") and an administrator's force sign-out, written out from
:mod:`bff.routes.sessions` and :mod:`bff.services.devices`."""

from __future__ import annotations

from typing import Any

from bff.services.devices import LAST_ACTIVE_STEP
from bff_dev.openapi.common import (
    CSRF_REF,
    JSON,
    NO_STORE,
    SESSION_SECURITY,
    default_problem,
    operation_id,
    problem_response,
    store_down,
)

TAG = "sessions"
HANDLE_PATTERN = "^[0-9a-f]{32}$"
SUB_MAX_LENGTH = 255
# What the handler accepts (printable ASCII), less what no canonical path can carry (bff.web.edge).
SUB_PATTERN = "^(?!\\.\\.?$)(?:(?![/\\\\#])[\\u0020-\\u007e])+$"
_ADMIN = "/api/admin/users/{sub}/sessions"
_ADMIN_ONE = _ADMIN + "/{handle}"
_NOT_FOUND = (
    "any handle that is not one of this user's live sessions (malformed, another user's, already ended): one "
    "answer for all"
)
_UNAUTHENTICATED = (
    "`not_authenticated` without a session, and for a Connect-only session (nobody is signed in); "
    "`session_expired` when the cookie (or `Authorization: Session` token) names a session that has ended"
)
_ENDING = (
    "Each session ends at once for every replica (its record is replaced by a tombstone), then its refresh and "
    "access tokens are revoked at the provider (RFC 7009; a provider that cannot be reached does not fail the "
    "call). No request body is read."
)


def _ok(schema_ref: str, description: str, cookie: str | None = None) -> dict[str, Any]:
    headers: dict[str, Any] = dict(NO_STORE)
    if cookie:
        headers["Set-Cookie"] = {"description": cookie, "schema": {"type": "string"}}
    return {
        "description": description,
        "headers": headers,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


def _with_reason(response: dict[str, Any], why: str) -> dict[str, Any]:
    response["description"] = response["description"].rstrip(".") + f"; {why}."
    return response


def _handle(description: str) -> dict[str, Any]:
    return {
        "name": "handle",
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": HANDLE_PATTERN},
    }


def _errors(*, changes: bool, admin: bool = False, one: bool = False) -> dict[str, Any]:
    """The problems a session operation may answer with: ``changes`` (a state-changing method: the ``Origin``
    check), ``admin`` (``BFF_ADMIN_SUBJECTS`` and the ``{sub}`` check), ``one`` (a ``{handle}``)."""
    forbidden = ["csrf_required"]
    if changes:
        forbidden.append("origin_not_allowed")
    if admin:
        forbidden += ["forbidden", "limit_management_disabled"]
    responses: dict[str, Any] = {}
    if admin or one:
        bad = ["invalid_parameter", "invalid_path"] if admin else ["invalid_path"]
        why = "a path that is not canonical (an encoded `/`, `\\` or NUL, a dot segment) is `invalid_path`"
        if admin:
            why = "`invalid_parameter` for a `{sub}` that is not a subject identifier; " + why
        responses["400"] = _with_reason(problem_response(400, *bad), why)
    responses["401"] = _with_reason(problem_response(401, "not_authenticated", "session_expired"), _UNAUTHENTICATED)
    responses["403"] = problem_response(403, *forbidden)
    if admin:
        _with_reason(responses["403"], "`forbidden` unless the caller's subject is in `BFF_ADMIN_SUBJECTS`")
    if one:
        responses["404"] = _with_reason(problem_response(404, "session_not_found"), _NOT_FOUND)
    responses["503"] = store_down()
    responses["default"] = default_problem()
    return responses


def sessions_paths() -> dict[str, dict[str, Any]]:
    """``/auth/sessions``: the caller's own sessions."""
    listing = {
        "tags": [TAG],
        "operationId": "list_sessions",
        "summary": "The caller's live sessions, browsers and native apps alike (no upstream call)",
        "description": (
            "Every live session of the signed-in user, the caller's own first (`current` true), then the most "
            "recently active. Read from the user's own index in the session store: no call to the provider."
        ),
        "security": SESSION_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": _ok("SessionList", "The user's live sessions."),
            **_errors(changes=False),
        },
    }
    end_one = {
        "tags": [TAG],
        "operationId": "end_session",
        "summary": "End one of the caller's sessions (the caller's own included)",
        "description": (
            f"Ends the session of that handle, if it is one of the caller's live sessions. {_ENDING} Ending the "
            "caller's own session is a sign-out: the answer clears the session cookie (a native app's "
            "`Authorization: Session` token simply stops working)."
        ),
        "security": SESSION_SECURITY,
        "parameters": [
            CSRF_REF,
            _handle("A `handle` from `GET /auth/sessions`; anything else is 404 `session_not_found`."),
        ],
        "responses": {
            "200": _ok(
                "SessionEnded",
                "The session has ended.",
                "When the caller ended its own session with its cookie: the session cookie, cleared.",
            ),
            **_errors(changes=True, one=True),
        },
    }
    end_others = {
        "tags": [TAG],
        "operationId": "end_other_sessions",
        "summary": "Sign out everywhere else: end every session of the caller but its own",
        "description": f"The caller's own session stays, and so does its cookie. {_ENDING}",
        "security": SESSION_SECURITY,
        "parameters": [CSRF_REF],
        "responses": {
            "200": _ok("SessionsEnded", "The other sessions have ended (`ended` may be 0)."),
            **_errors(changes=True),
        },
    }
    return {
        "/auth/sessions": {"get": listing},
        "/auth/sessions/end-others": {"post": end_others},
        "/auth/sessions/{handle}": {"delete": end_one},
    }


def admin_sessions_paths() -> dict[str, dict[str, Any]]:
    """``/api/admin/users/{sub}/sessions``: any user's sessions, for administrators; served by
    :mod:`bff.routes.sessions`, not the route table."""
    sub = {
        "name": "sub",
        "in": "path",
        "required": True,
        "description": (
            "The user's subject identifier (the ID token's `sub`), URL-encoded: 1 to 255 characters without "
            "control characters, else 400 `invalid_parameter`. A subject that holds `/`, `\\` or `#`, or is `.` "
            "or `..`, cannot be named in a path (bff refuses such a path: 400 `invalid_path`). A subject bff "
            "knows no session of is no error: it has none."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": SUB_MAX_LENGTH, "pattern": SUB_PATTERN},
    }
    admin_only = "Admin only (`BFF_ADMIN_SUBJECTS`; with none configured, 403 `limit_management_disabled`)."
    listing = {
        "tags": [TAG],
        "operationId": operation_id("GET", _ADMIN),
        "summary": "A user's live sessions (administrators)",
        "description": (
            f"{admin_only} The same entries as `GET /auth/sessions`, the most recently active first; `current` "
            "is true only for the administrator's own session (listing one's own subject). No upstream call."
        ),
        "security": SESSION_SECURITY,
        "parameters": [CSRF_REF, sub],
        "responses": {
            "200": _ok("AdminSessionList", "The user's live sessions."),
            **_errors(changes=False, admin=True),
        },
    }
    end_all = {
        "tags": [TAG],
        "operationId": operation_id("DELETE", _ADMIN),
        "summary": "Force sign-out: end every session of a user (administrators)",
        "description": f"{admin_only} {_ENDING}",
        "security": SESSION_SECURITY,
        "parameters": [CSRF_REF, sub],
        "responses": {
            "200": _ok(
                "AdminSessionsEnded",
                "The user's sessions have ended (`ended` may be 0).",
                "When the administrator named its own subject with its cookie: the session cookie, cleared.",
            ),
            **_errors(changes=True, admin=True),
        },
    }
    end_one = {
        "tags": [TAG],
        "operationId": operation_id("DELETE", _ADMIN_ONE),
        "summary": "End one session of a user (administrators)",
        "description": f"{admin_only} {_ENDING}",
        "security": SESSION_SECURITY,
        "parameters": [
            CSRF_REF,
            sub,
            _handle(
                "A `handle` from `GET /api/admin/users/{sub}/sessions`; anything else (a session of another "
                "user included) is 404 `session_not_found`."
            ),
        ],
        "responses": {
            "200": _ok(
                "AdminSessionEnded",
                "The session has ended.",
                "When the administrator ended its own session with its cookie: the session cookie, cleared.",
            ),
            **_errors(changes=True, admin=True, one=True),
        },
    }
    return {_ADMIN: {"get": listing, "delete": end_all}, _ADMIN_ONE: {"delete": end_one}}


def sessions_schemas() -> dict[str, Any]:
    entries = {"type": "array", "items": {"$ref": "#/components/schemas/SessionEntry"}}
    sub = {"type": "string", "description": "The `{sub}` of the path."}
    return {
        "SessionEntry": {
            "type": "object",
            "description": "One live session, as its user sees it.",
            "required": ["handle", "kind", "device", "created_at", "last_active_at", "current"],
            "properties": {
                "handle": {
                    "type": "string",
                    "pattern": HANDLE_PATTERN,
                    "description": (
                        "Names the session in the `DELETE` calls. Not the cookie, not the session id, not a key of "
                        "the session store."
                    ),
                },
                "kind": {
                    "enum": ["browser", "mobile"],
                    "description": "`browser`: a session cookie; `mobile`: a native app's session token.",
                },
                "device": {
                    "type": "string",
                    "minLength": 1,
                    "description": (
                        "From the `User-Agent` at sign-in, in a fixed vocabulary (never the header as sent): "
                        '"Chrome on Linux", "Safari on iOS", "Firefox" (system unknown), "A browser on Windows" '
                        '(browser unknown), "Unknown device".'
                    ),
                },
                "created_at": {"type": "integer", "description": "Unix time of the sign-in, seconds."},
                "last_active_at": {
                    "type": "integer",
                    "multipleOf": LAST_ACTIVE_STEP,
                    "description": f"Unix time of its last use, rounded down to {LAST_ACTIVE_STEP} seconds.",
                },
                "current": {"type": "boolean", "description": "The session of this call."},
            },
        },
        "SessionList": {
            "type": "object",
            "required": ["sessions"],
            "properties": {"sessions": entries},
        },
        "AdminSessionList": {
            "type": "object",
            "required": ["sub", "sessions"],
            "properties": {"sub": sub, "sessions": entries},
        },
        "SessionEnded": {
            "type": "object",
            "required": ["ended"],
            "properties": {"ended": {"const": 1}},
        },
        "SessionsEnded": {
            "type": "object",
            "required": ["ended"],
            "properties": {"ended": {"type": "integer", "minimum": 0, "description": "How many sessions ended."}},
        },
        "AdminSessionEnded": {
            "type": "object",
            "required": ["sub", "ended"],
            "properties": {"sub": sub, "ended": {"const": 1}},
        },
        "AdminSessionsEnded": {
            "type": "object",
            "required": ["sub", "ended"],
            "properties": {
                "sub": sub,
                "ended": {"type": "integer", "minimum": 0, "description": "How many sessions ended."},
            },
        },
    }
