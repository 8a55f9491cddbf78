"""The one error tree (:mod:`bff.errors`) and its one RFC 9457 rendering: every class, as a client sees it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY

from bff import errors
from bff.errors import (
    PROBLEM_JSON,
    BadGateway,
    BadRequest,
    BffError,
    CsrfRequired,
    Forbidden,
    GatewayTimeout,
    HeaderFieldsTooLarge,
    IdpBusy,
    IdpUnavailable,
    InvalidIdToken,
    InvalidLogoutToken,
    MethodNotAllowed,
    NotAuthenticated,
    NotFound,
    NotReady,
    OriginNotAllowed,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    SessionStoreUnavailable,
    TokenRejected,
    error_response,
    problem_body,
    retry_after_header,
    session_expired,
)

# class: (its parent, status, default code, title) — the tree drawn in the module's docstring.
TREE: dict[type[BffError], tuple[type[Exception], int, str, str]] = {
    BffError: (Exception, 500, "internal_error", "Internal error"),
    BadRequest: (BffError, 400, "invalid_request", "Bad request"),
    InvalidIdToken: (BadRequest, 400, "invalid_id_token", "The ID token is not valid"),
    InvalidLogoutToken: (BadRequest, 400, "invalid_logout_token", "The logout token is not valid"),
    NotAuthenticated: (BffError, 401, "not_authenticated", "Not authenticated"),
    TokenRejected: (BffError, 401, "token_rejected", "The identity provider refused the request"),
    Forbidden: (BffError, 403, "forbidden", "Forbidden"),
    CsrfRequired: (Forbidden, 403, "csrf_required", "CSRF header required"),
    OriginNotAllowed: (Forbidden, 403, "origin_not_allowed", "Origin not allowed"),
    NotFound: (BffError, 404, "not_found", "Not found"),
    MethodNotAllowed: (BffError, 405, "method_not_allowed", "Method not allowed"),
    RequestTimeout: (BffError, 408, "request_timeout", "Request Timeout"),
    RateLimited: (BffError, 429, "rate_limited", "Too many requests"),
    HeaderFieldsTooLarge: (BffError, 431, "request_header_fields_too_large", "Request Header Fields Too Large"),
    BadGateway: (BffError, 502, "upstream_unavailable", "Upstream unavailable"),
    IdpUnavailable: (BadGateway, 502, "idp_unavailable", "Identity provider unavailable"),
    ServiceUnavailable: (BffError, 503, "service_unavailable", "Service unavailable"),
    SessionStoreUnavailable: (ServiceUnavailable, 503, "session_store_unavailable", "Session store unavailable"),
    IdpBusy: (ServiceUnavailable, 503, "idp_busy", "Identity provider busy"),
    NotReady: (ServiceUnavailable, 503, "not_ready", "Not ready"),
    GatewayTimeout: (BffError, 504, "upstream_timeout", "Upstream timeout"),
}


def _instance(cls: type[BffError]) -> BffError:
    """An instance as bff raises it, with its default code and detail where the class allows."""
    if cls is TokenRejected:
        return TokenRejected("invalid_grant")
    if cls is InvalidLogoutToken:
        return InvalidLogoutToken("The token has no events claim.")
    return cls()


def _counted(code: str) -> float:
    return REGISTRY.get_sample_value("bff_errors_total", {"code": code}) or 0.0


def test_the_tree_is_complete() -> None:
    defined = {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BffError)}
    assert defined == set(TREE)


@pytest.mark.parametrize("cls", list(TREE), ids=lambda cls: cls.__name__)
def test_every_class_renders_its_status_code_and_title(cls: type[BffError]) -> None:
    parent, status, code, title = TREE[cls]
    assert cls.__bases__ == (parent,)
    exc = _instance(cls)
    before = _counted(code)
    body: dict[str, Any] = json.loads(problem_body(exc))
    assert _counted(code) == before + 1  # bff_errors_total counts every rendering by its code
    assert body["type"] == f"urn:bff:problem:{code}"
    assert (body["status"], body["code"], body["title"]) == (status, code, title)
    assert body["detail"] == exc.detail
    response = error_response(exc)
    assert response.status_code == status
    assert response.media_type == PROBLEM_JSON
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["cache-control"] == "no-store"
    assert json.loads(bytes(response.body)) == body


def test_the_detail_defaults_to_the_title_and_the_code_can_be_more_specific() -> None:
    assert json.loads(problem_body(NotFound()))["detail"] == "Not found"
    body = json.loads(problem_body(BadRequest("return_to must be a local path.", code="invalid_return_to")))
    assert (body["status"], body["code"], body["type"]) == (
        400,
        "invalid_return_to",
        "urn:bff:problem:invalid_return_to",
    )
    assert body["title"] == "Bad request"
    assert body["detail"] == "return_to must be a local path."
    assert list(body) == ["type", "title", "status", "detail", "code"]


def test_extra_members_and_headers_reach_the_client() -> None:
    exc = BadRequest("page: must be at least 1", code="invalid_parameter", extra={"parameter": "page"})
    assert json.loads(problem_body(exc))["parameter"] == "page"
    logout = json.loads(problem_body(InvalidLogoutToken("The token has no events claim.")))
    assert (logout["error"], logout["error_description"]) == ("invalid_request", "The token has no events claim.")
    busy = error_response(IdpBusy(headers=retry_after_header(7)))
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "7"
    assert busy.headers["cache-control"] == "no-store"


def test_the_body_is_compact_utf_8() -> None:
    raw = problem_body(BadRequest("Ungültiger Wert."))
    assert "Ungültiger Wert.".encode() in raw
    assert b", " not in raw and b": " not in raw


def test_token_rejected_keeps_the_providers_error() -> None:
    exc = TokenRejected("invalid_grant")
    assert exc.error == "invalid_grant"
    assert exc.detail == "The identity provider answered 'invalid_grant'."


def test_an_ended_session_is_one_answer() -> None:
    exc = session_expired()
    assert isinstance(exc, NotAuthenticated)
    assert (exc.status, exc.code) == (401, "session_expired")


@pytest.mark.parametrize(("seconds", "header"), [(0, "1"), (0.2, "1"), (1, "1"), (2.1, "3"), (59.99, "60")])
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == {"Retry-After": header}
