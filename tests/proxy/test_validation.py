"""Validation of what the SPA sends (:mod:`bff.proxy.validation`), against the real route table and a few
routes made up to reach every kind of field; no server, no upstream."""

from __future__ import annotations

import re

import pytest
from starlette.datastructures import QueryParams

from bff.errors import BadRequest
from bff.proxy import validation
from bff.proxy.routes import GRANT_ID, ROUTES, Field, ForwardRoute
from bff.proxy.validation import MAX_BODY_BYTES, upstream_query, validate_body, validate_path, validate_query

ROUTE = {(r.method, r.path): r for r in ROUTES}
INTEGRATIONS = ROUTE["GET", "/api/v1/integrations"]
USERINFO = ROUTE["GET", "/api/v1/userinfo"]
LIMIT = ROUTE["PATCH", "/api/developer/grants/{grantId}/transaction-limit"]
# Kinds of field no route of the table has today, in the query and in a body.
FLAGS = ForwardRoute(
    method="POST",
    path="/api/test/flags",
    upstream="data",
    upstream_path="/flags",
    credentials="user_token",
    query=(Field("active", "bool"), Field("count", "int")),
    body=(Field("label", "str", max_length=5), Field("count", "int", minimum=0, maximum=10)),
)


def _query_refusal(route: ForwardRoute, query: str) -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        validate_query(route, QueryParams(query))
    return refused.value


def _body_refusal(route: ForwardRoute, raw: bytes, media_type: str = "application/json") -> BadRequest:
    with pytest.raises(BadRequest) as refused:
        validate_body(route, media_type, raw)
    return refused.value


# --- the query ------------------------------------------------------------------------------------------------


def test_a_valid_query_is_rebuilt_from_its_values() -> None:
    query = QueryParams("page=2&pageSize=200&searchedKey=caf%C3%A9+bar")
    assert validate_query(INTEGRATIONS, query) == {"page": "2", "pageSize": "200", "searchedKey": "café bar"}
    assert validate_query(INTEGRATIONS, QueryParams("")) == {}
    assert validate_query(FLAGS, QueryParams("active=true&count=0")) == {"active": "true", "count": "0"}
    assert validate_query(FLAGS, QueryParams("active=false")) == {"active": "false"}


def test_the_upstream_query_is_the_validated_one_and_kept_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "_queries", {})
    monkeypatch.setattr(validation, "_QUERIES_KEPT", 8)
    raw = "searchedKey=caf%C3%A9+bar&page=2"
    assert upstream_query(INTEGRATIONS, raw) == "searchedKey=caf%C3%A9+bar&page=2"
    assert validation._queries == {("GET", "/api/v1/integrations", raw): "searchedKey=caf%C3%A9+bar&page=2"}
    assert upstream_query(INTEGRATIONS, raw) == "searchedKey=caf%C3%A9+bar&page=2"  # from the table
    assert upstream_query(USERINFO, "") == ""
    # A refusal is never kept: the same bad query is refused every time, on every route it is sent to.
    for _ in range(2):
        with pytest.raises(BadRequest):
            upstream_query(INTEGRATIONS, "page=0")
    with pytest.raises(BadRequest):
        upstream_query(USERINFO, raw)  # what one route accepts another refuses, though the bytes are the same
    # A long query string (600 characters as sent, 200 once decoded) is validated every time, never kept.
    long_raw = "searchedKey=" + "%41" * 200
    kept = dict(validation._queries)
    assert upstream_query(INTEGRATIONS, long_raw) == "searchedKey=" + "A" * 200
    assert validation._queries == kept
    # Endless new queries never grow the table past its bound.
    sizes = set()
    for n in range(1, 100):
        assert upstream_query(INTEGRATIONS, f"page={n}") == f"page={n}"
        sizes.add(len(validation._queries))
    assert max(sizes) == 8


@pytest.mark.parametrize(
    ("query", "parameter", "detail"),
    [
        ("page=0", "page", "must be at least 1"),
        ("page=1000001", "page", "must be at most 1000000"),
        ("pageSize=201", "pageSize", "must be at most 200"),
        ("page=02", "page", "must be a whole number"),  # one spelling per number
        ("page=-1", "page", "must be a whole number"),
        ("page=+1", "page", "must be a whole number"),
        ("page=1.0", "page", "must be a whole number"),
        ("page=1e3", "page", "must be a whole number"),
        ("page=", "page", "must be a whole number"),
        ("page=%201", "page", "must be a whole number"),
        ("page=%D9%A1", "page", "must be a whole number"),  # a digit, but not an ASCII one
        ("page=" + "9" * 17, "page", "must be a whole number"),
        ("page=1&page=2", "page", "must be given once"),
        ("pageSize=10&pagesize=10", "pagesize", "is not accepted by this endpoint"),
        ("searchedKey=" + "a" * 201, "searchedKey", "must be at most 200 characters"),
        ("searchedKey=a%00b", "searchedKey", "must not contain control characters"),
        ("searchedKey=a%7Fb", "searchedKey", "must not contain control characters"),
        ("searchedKey=a%0Ab", "searchedKey", "must not contain control characters"),
    ],
)
def test_an_invalid_query_names_its_parameter(query: str, parameter: str, detail: str) -> None:
    refused = _query_refusal(INTEGRATIONS, query)
    assert (refused.status, refused.code, refused.extra) == (400, "invalid_parameter", {"parameter": parameter})
    assert refused.detail == f"{parameter}: {detail}"


@pytest.mark.parametrize("value", ["True", "1", "yes", "", "true "])
def test_a_boolean_in_the_query_is_true_or_false_exactly(value: str) -> None:
    refused = _query_refusal(FLAGS, f"active={value}")
    assert refused.extra == {"parameter": "active"} and refused.detail == "active: must be true or false"


def test_a_route_without_parameters_accepts_none() -> None:
    assert _query_refusal(USERINFO, "page=1").extra == {"parameter": "page"}


# --- path segments ----------------------------------------------------------------------------------------------


def test_a_path_segment_must_match_its_pattern_whole() -> None:
    assert validate_path(LIMIT, {"grantId": "grant_1-A"}) == {"grantId": "grant_1-A"}
    assert validate_path(LIMIT, {"grantId": "g" * 128}) == {"grantId": "g" * 128}
    assert validate_path(USERINFO, {"anything": "ignored"}) == {}
    assert LIMIT.path_params == {"grantId": GRANT_ID}


@pytest.mark.parametrize("value", ["", "g" * 129, "a/b", "..", "a b", "grant\n", "grant%2F", "gränt", None, 7])
def test_an_invalid_path_segment_is_refused(value: object) -> None:
    params = {} if value is None else {"grantId": value}
    with pytest.raises(BadRequest) as refused:
        validate_path(LIMIT, params)
    assert (refused.value.code, refused.value.extra) == ("invalid_parameter", {"parameter": "grantId"})
    assert re.search("not a valid identifier", refused.value.detail)


# --- the body ---------------------------------------------------------------------------------------------------


def test_a_valid_body_is_rebuilt_compactly_from_its_fields() -> None:
    raw = b'{ "transactionLimit": 500,\n "enableLimiter": true }'
    assert validate_body(LIMIT, "application/json", raw) == b'{"transactionLimit":500,"enableLimiter":true}'
    assert validate_body(LIMIT, "application/json", b'{"enableLimiter":false}') == b'{"enableLimiter":false}'
    assert validate_body(LIMIT, "application/json", b'{"transactionLimit":9007199254740991}') == (
        b'{"transactionLimit":9007199254740991}'
    )
    assert validate_body(FLAGS, "application/json", b'{"label":"caf\\u00e9"}') == b'{"label":"caf\\u00e9"}'
    assert validate_body(FLAGS, "application/json", b"{}") == b"{}"  # no field is required on this one


def test_a_route_without_a_body_takes_none() -> None:
    assert validate_body(USERINFO, "", b"") is None
    refused = _body_refusal(USERINFO, b"{}")
    assert (refused.code, refused.detail) == ("invalid_body", "This endpoint takes no request body.")


@pytest.mark.parametrize(
    ("media_type", "raw", "detail"),
    [
        ("", b'{"enableLimiter":true}', "Send the body as application/json."),
        ("text/plain", b'{"enableLimiter":true}', "Send the body as application/json."),
        ("application/x-www-form-urlencoded", b"enableLimiter=true", "Send the body as application/json."),
        ("application/json", b'{"enableLimiter":true}' + b" " * MAX_BODY_BYTES, "The request body is too large."),
        ("application/json", b"", "The request body is not valid JSON."),
        ("application/json", b"{'enableLimiter': true}", "The request body is not valid JSON."),
        ("application/json", b'{"enableLimiter":tru', "The request body is not valid JSON."),
        ("application/json", b"\xff\xfe{}", "The request body is not valid JSON."),
        ("application/json", b"[]", "The request body must be a JSON object."),
        ("application/json", b'"enableLimiter"', "The request body must be a JSON object."),
        ("application/json", b"null", "The request body must be a JSON object."),
    ],
)
def test_a_body_that_is_not_one_json_object_is_refused(media_type: str, raw: bytes, detail: str) -> None:
    refused = _body_refusal(LIMIT, raw, media_type)
    assert (refused.status, refused.code, refused.detail) == (400, "invalid_body", detail)


@pytest.mark.parametrize(
    ("route", "raw", "parameter", "detail"),
    [
        (LIMIT, b'{"transactionLimit":true}', "transactionLimit", "must be a whole number"),  # bool is not an int
        (LIMIT, b'{"transactionLimit":1.5}', "transactionLimit", "must be a whole number"),
        (LIMIT, b'{"transactionLimit":"5"}', "transactionLimit", "must be a whole number"),
        (LIMIT, b'{"transactionLimit":null}', "transactionLimit", "must be a whole number"),
        (LIMIT, b'{"transactionLimit":0}', "transactionLimit", "must be at least 1"),
        (LIMIT, b'{"transactionLimit":9007199254740992}', "transactionLimit", "must be at most 9007199254740991"),
        (LIMIT, b'{"enableLimiter":"true"}', "enableLimiter", "must be true or false"),
        (LIMIT, b'{"enableLimiter":1}', "enableLimiter", "must be true or false"),
        (LIMIT, b'{"enableLimiter":true,"grantId":"other"}', "grantId", "is not accepted by this endpoint"),
        (FLAGS, b'{"label":5}', "label", "must be a string"),
        (FLAGS, b'{"label":"sixsix"}', "label", "must be at most 5 characters"),
        (FLAGS, b'{"label":"a\\u0000"}', "label", "must not contain control characters"),
        (FLAGS, b'{"count":-1}', "count", "must be at least 0"),
        (FLAGS, b'{"count":11}', "count", "must be at most 10"),
    ],
)
def test_an_invalid_body_field_names_its_parameter(
    route: ForwardRoute, raw: bytes, parameter: str, detail: str
) -> None:
    refused = _body_refusal(route, raw)
    assert (refused.code, refused.extra, refused.detail) == (
        "invalid_parameter",
        {"parameter": parameter},
        f"{parameter}: {detail}",
    )


def test_a_route_that_needs_one_field_refuses_an_empty_object() -> None:
    refused = _body_refusal(LIMIT, b"{}")
    assert refused.code == "invalid_parameter"
    assert refused.detail == "Send at least one of transactionLimit or enableLimiter."
