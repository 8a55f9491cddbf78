"""bff describes itself: the OpenAPI 3.1 document, its committed copy, and schemathesis against ``bff dev``.

The fuzzing run starts ``bff dev`` as a subprocess (the emulator, bff and the SPA on one port), loads the
document bff serves at ``/openapi.json``, and sends every operation schemathesis-generated cases, valid and
invalid, twice: unauthenticated, then signed in as the emulator's admin (cookie + ``X-CSRF: 1`` + a
same-origin ``Origin``) so the cases reach the validation and forwarding code. Checks: no 5xx, and every
4xx/5xx is bff's problem+json with a ``code``, except Kryptos's own error JSON that ``/api/...`` passes
through by contract. The session operations (``/auth/sessions``, ``/api/admin/users/{sub}/sessions``) are
fuzzed signed in only, and their answers must also match the document (status, media type, headers, schema);
a scripted walk through them checks the same of what fuzzing cannot reach (listed and ended sessions).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import httpx2
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import (
    CheckFunction,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.errors import FailureGroup
from starlette.routing import Route

from bff.app import create_app
from bff.config import load_settings
from bff.proxy.routes import GRANT_ID, ROUTES
from bff.routes import sessions, verify
from bff.services.connect import _EXCHANGE_REFUSALS, _PUBLIC_TOKEN
from bff.services.devices import LAST_ACTIVE_STEP
from bff.sessions.model import Kind
from bff_dev.demo import create_dev_app
from bff_dev.openapi import build_document, render
from tests.support.processes import child_env, wait_ready
from tests.support.redis_server import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "openapi.json"
REGENERATE = ".venv/bin/python -m bff_dev.openapi > openapi.json"
PROBLEM_JSON = "application/problem+json"
MAX_EXAMPLES = 25  # per operation and generation mode (valid, then invalid cases): ~800 cases per pass
SEED = 20240917
# Ending the signed-in session would turn every later case of the authenticated run into a 401.
LOGOUT_OPERATIONS = frozenset({"POST /auth/logout", "GET /auth/logout"})
# Issue 15: a user's sessions, and an administrator's force sign-out.
SESSION_OPERATIONS = (
    "GET /auth/sessions",
    "DELETE /auth/sessions/{handle}",
    "POST /auth/sessions/end-others",
    "GET /api/admin/users/{sub}/sessions",
    "DELETE /api/admin/users/{sub}/sessions",
    "DELETE /api/admin/users/{sub}/sessions/{handle}",
)
# Unauthenticated, every session operation stops at the same 401 (or the edge's 403/400, which the signed-in
# run reaches too): test_session_operations_answer_as_described calls each once without a session instead of
# ~300 cases.
ANONYMOUS_EXCLUDED = frozenset(SESSION_OPERATIONS)
# `/auth/verify`, its original request named in headers or (Envoy's path_prefix) appended to the path.
VERIFY_PATHS = (verify.PREFIX, verify.PREFIX + "/{original}")
# schemathesis leaves the type parameters of its operations open.
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]
# /auth/verify answers every method the same way, and only to a trusted proxy (this client is not one): its
# GET operations stand for the other twelve, which would add ~1,000 cases of the same 403 to every run.
VERIFY_OTHER_METHODS = frozenset(
    f"{method} {path}"
    for path in ("/auth/verify", "/auth/verify/{original}")
    for method in ("HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
)


def _schema(document: dict[str, Any]) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict({"seed": SEED, "generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_dict(copy.deepcopy(document), config=config)


def _operations(schema: schemathesis.BaseSchema) -> Iterator[Operation]:
    """Every operation of the schema; raises on one schemathesis cannot use."""
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        yield result.ok()


def _settings() -> Any:
    return load_settings({"BFF_CLIENT_ID": "c", "BFF_CLIENT_SECRET": "s"}, dev=True)


async def _get(app: Any, path: str) -> httpx2.Response:
    # No lifespan: neither a 404 nor the document needs the services.
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://localhost") as client:
        return await client.get(path)


# --- the document ------------------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    document = build_document()
    assert document["openapi"] == "3.1.0"
    schema = _schema(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    labels = {operation.label for operation in _operations(schema)}
    assert labels == {
        "GET /auth/login",
        "GET /auth/callback",
        "GET /auth/session",
        "POST /auth/logout",
        "GET /auth/logout",
        "POST /auth/backchannel-logout",
        "POST /auth/mobile/token",
        "POST /connect/link-token",
        "POST /connect/exchange",
        "GET /connect/status",
        "POST /connect/disconnect",
        "POST /api/developer/grants/{grantId}/revoke",
        *SESSION_OPERATIONS,
        "GET /healthz",
        "GET /readyz",
        *(f"{r.method} {r.path}" for r in ROUTES),
        *(f"{method} {path}" for path in VERIFY_PATHS for method in verify.METHODS),
    }


def test_every_route_of_the_app_is_described() -> None:
    described = {(path, method.upper()) for path, item in build_document()["paths"].items() for method in item}
    served = {
        # Starlette's `{name:path}` (a parameter that may span segments, slashes and all) is OpenAPI's `{name}`:
        # OpenAPI has no such convertor, so the operation says in the parameter's description that the value
        # keeps its slashes (test_verify_operations_describe_the_ingress_contract checks it).
        (re.sub(r"\{(\w+):path\}", r"{\1}", route.path), method)
        for route in create_app(_settings()).routes
        if isinstance(route, Route)  # the only routes with methods (no Mount, no WebSocketRoute)
        for method in route.methods or ()
    }
    # Starlette serves HEAD wherever it serves GET; only HEAD that a route lists itself (/auth/verify, whose
    # ingress may send the original request's HEAD) is described, and what is described must be served.
    head = {(path, "HEAD") for path, _ in served}
    assert served - head == described - head
    assert described & head <= served
    assert {(path, "HEAD") for path in VERIFY_PATHS} <= described


def test_forwarded_operations_come_from_the_route_table() -> None:
    paths = build_document()["paths"]
    for route in ROUTES:
        operation = paths[route.path][route.method.lower()]
        params = {(p["in"], p["name"]): p for p in operation["parameters"] if "$ref" not in p}
        assert {name for (where, name) in params if where == "query"} == {f.name for f in route.query}
        assert {"$ref": "#/components/parameters/XCsrf"} in operation["parameters"]
        for name, pattern in route.path_params.items():
            assert params[("path", name)]["schema"]["pattern"] == pattern.pattern
        assert ("requestBody" in operation) == (route.body is not None)
    integrations = {p["name"]: p["schema"] for p in paths["/api/v1/integrations"]["get"]["parameters"] if "name" in p}
    assert integrations["page"].items() >= {"type": "integer", "minimum": 1, "maximum": 1_000_000}.items()
    assert integrations["pageSize"].items() >= {"type": "integer", "minimum": 1, "maximum": 200}.items()
    assert integrations["searchedKey"].items() >= {"type": "string", "maxLength": 200}.items()
    patch = paths["/api/developer/grants/{grantId}/transaction-limit"]["patch"]
    grant_id = next(p for p in patch["parameters"] if p.get("name") == "grantId")
    assert grant_id["schema"]["pattern"] == "^[A-Za-z0-9_-]{1,128}$"
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert body["minProperties"] == 1
    assert body["properties"].keys() == {"transactionLimit", "enableLimiter"}
    limit = body["properties"]["transactionLimit"]
    assert limit.items() >= {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}.items()
    assert body["properties"]["enableLimiter"] == {"type": "boolean"}


def test_connect_operations_describe_their_cookies_csrf_and_codes() -> None:
    document = build_document()
    paths = document["paths"]
    csrf = {"$ref": "#/components/parameters/XCsrf"}
    for path in ("/connect/link-token", "/connect/exchange", "/connect/status", "/connect/disconnect"):
        for method, operation in paths[path].items():
            assert operation["tags"] == ["connect"]
            assert csrf in operation["parameters"], path
            assert {"connectCookie": []} in operation["security"]
            assert "`session_store_unavailable`" in operation["responses"]["503"]["description"]
            forbidden = operation["responses"]["403"]["description"]
            assert "`csrf_required`" in forbidden
            assert ("`origin_not_allowed`" in forbidden) == (method == "post"), path
            assert "`connect_failed`" in operation["responses"]["502"]["description"]
    for path in ("/connect/link-token", "/connect/exchange"):
        assert "`rate_limited`" in paths[path]["post"]["responses"]["429"]["description"]
    assert "429" not in paths["/connect/status"]["get"]["responses"]
    cookie = document["components"]["securitySchemes"]["connectCookie"]
    assert cookie["in"] == "cookie"
    assert cookie["name"] == "__Host-bff-connect"
    https = _settings().model_copy(update={"public_url": "https://bff.example"})
    assert cookie["name"] == https.connect_cookie_name
    assert document["components"]["securitySchemes"]["sessionCookie"]["name"] == https.session_cookie_name
    exchange = paths["/connect/exchange"]["post"]
    body = exchange["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["public_token"]
    assert body["properties"]["public_token"]["pattern"] == _PUBLIC_TOKEN.pattern
    # Kryptos's refusals of a public token, as bff renames them, are each in the exchange's 400.
    for code, _ in _EXCHANGE_REFUSALS.values():
        assert f"`{code}`" in exchange["responses"]["400"]["description"]
    revoke = paths["/api/developer/grants/{grantId}/revoke"]["post"]
    grant_id = next(p for p in revoke["parameters"] if p.get("name") == "grantId")
    assert grant_id["schema"]["pattern"] == GRANT_ID.pattern
    assert "`limit_management_disabled`" in revoke["responses"]["403"]["description"]
    assert "`not_found`" in revoke["responses"]["404"]["description"]
    # The data routes may answer with the session's grant: its revocation and a refused valid grant.
    for route in ROUTES:
        responses = paths[route.path][route.method.lower()]["responses"]
        user_call = route.credentials == "user_token"
        assert ("`connect_revoked`" in responses["401"]["description"]) == user_call, route.path
        assert ("`connect_failed`" in responses["502"]["description"]) == user_call, route.path
    grants = paths["/api/developer/grants"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert grants == {"$ref": "#/components/schemas/GrantList"}
    known = document["components"]["schemas"]["GrantFacts"]
    assert known["properties"].keys() == {"kind", "transaction_limit", "enable_limiter"}
    assert known["properties"]["kind"]["enum"] == ["guest", "linked", None]


def test_session_operations_describe_their_codes_cookies_and_entries() -> None:
    document = build_document()
    paths = document["paths"]
    handler_codes = set(re.findall(r'code="([a-z_]+)"', Path(sessions.__file__).read_text()))
    assert handler_codes == {"not_authenticated", "session_not_found"}
    for label in SESSION_OPERATIONS:
        method, path = label.split(" ")
        operation = paths[path][method.lower()]
        responses = operation["responses"]
        admin = path.startswith("/api/admin/")
        assert operation["tags"] == ["sessions"], label
        assert operation["security"] == [{"sessionCookie": []}, {"sessionToken": []}], label
        assert {"$ref": "#/components/parameters/XCsrf"} in operation["parameters"], label
        ok = responses["200"]
        assert ok["headers"]["Cache-Control"]["schema"]["const"] == "no-store", label
        # The cookie is cleared when the caller's own session may be among those ended.
        assert ("Set-Cookie" in ok["headers"]) == (method == "DELETE"), label
        for code in ("not_authenticated", "session_expired"):
            assert f"`{code}`" in responses["401"]["description"], (label, code)
        forbidden = responses["403"]["description"]
        assert "`csrf_required`" in forbidden
        assert ("`origin_not_allowed`" in forbidden) == (method != "GET"), label
        for code in ("forbidden", "limit_management_disabled"):
            assert (f"`{code}`" in forbidden) == admin, (label, code)
        assert ("404" in responses) == ("{handle}" in path), label
        if "{handle}" in path:
            assert "`session_not_found`" in responses["404"]["description"]
        assert ("400" in responses) == (admin or "{handle}" in path), label
        if "400" in responses:
            assert "`invalid_path`" in responses["400"]["description"], label
            assert ("`invalid_parameter`" in responses["400"]["description"]) == admin, label
        assert "`session_store_unavailable`" in responses["503"]["description"], label
        params = {p["name"]: p for p in operation["parameters"] if "name" in p}
        if "{handle}" in path:
            assert params["handle"]["schema"]["pattern"] == f"^{sessions._HANDLE.pattern}$"
        if admin:
            sub = params["sub"]["schema"]
            longest, too_long = "s" * sub["maxLength"], "s" * (sub["maxLength"] + 1)
            assert sub["minLength"] == 1
            assert sessions._SUB.fullmatch(longest) and not sessions._SUB.fullmatch(too_long)
            assert re.search(sub["pattern"], "user_admin_ada")
            # Control characters and non-ASCII (the handler's 400), and what no canonical path carries (the edge's).
            for unsendable in ("a\x7fb", "a\x1f", "a\xe9", "a/b", "a\\b", "a#b", ".", ".."):
                assert not re.search(sub["pattern"], unsendable), unsendable
    schemas = document["components"]["schemas"]
    entry = schemas["SessionEntry"]
    assert set(entry["required"]) == entry["properties"].keys()
    assert entry["properties"].keys() == {"handle", "kind", "device", "created_at", "last_active_at", "current"}
    assert entry["properties"]["handle"]["pattern"] == f"^{sessions._HANDLE.pattern}$"
    assert entry["properties"]["kind"]["enum"] == list(get_args(Kind))
    assert entry["properties"]["last_active_at"]["multipleOf"] == LAST_ACTIVE_STEP
    own = paths["/auth/sessions"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert own == {"$ref": "#/components/schemas/SessionList"}
    assert schemas["SessionList"]["properties"]["sessions"]["items"] == {"$ref": "#/components/schemas/SessionEntry"}


def test_verify_operations_describe_the_ingress_contract() -> None:
    document = build_document()
    paths = document["paths"]
    assert "external-authorization" in {tag["name"] for tag in document["tags"]}
    operation_ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    # What the handler refuses with (every code it names), and what a refresh or the grant may answer.
    handler_codes = set(re.findall(r'code="([a-z_]+)"', Path(verify.__file__).read_text()))
    assert {"untrusted_caller", "route_not_allowed", "original_request_unknown"} <= handler_codes
    forbidden = handler_codes | {"invalid_path", "csrf_required", "origin_not_allowed", "invalid_parameter"}
    forbidden |= {"forbidden", "limit_management_disabled"}  # administrator-only routes
    headers = {"X-Original-Method", "X-Original-URI", "X-Forwarded-Method", "X-Forwarded-Uri", "X-CSRF", "Origin"}
    for path in VERIFY_PATHS:
        assert sorted(paths[path]) == sorted(m.lower() for m in verify.METHODS)
        for method, operation in paths[path].items():
            where = (method, path)
            assert operation["tags"] == ["external-authorization"], where
            assert operation["security"] == [{"sessionCookie": []}, {"sessionToken": []}], where
            params = {(p["in"], p["name"]): p for p in operation["parameters"]}
            assert {name for (at, name) in params if at == "header"} == headers, where
            assert not any(p.get("required") for (at, _), p in params.items() if at == "header"), where
            if path.endswith("{original}"):
                original = params[("path", "original")]
                assert original["required"] is True
                assert "slashes and all" in original["description"]
                assert "`invalid_path`" in operation["responses"]["400"]["description"]
            else:
                assert {at for at, _ in params} == {"header"}
                assert "400" not in operation["responses"], where
            responses = operation["responses"]
            ok = responses["200"]
            assert "content" not in ok, where  # an empty body: only the headers matter
            assert ok["headers"].keys() == {"Authorization", "X-Client-Id", "X-Client-Secret", "Cache-Control"}
            assert ok["headers"]["Cache-Control"]["schema"]["const"] == "no-store"
            assert ok["headers"]["X-Client-Secret"]["required"] is True
            assert "Authorization" not in {k for k, v in ok["headers"].items() if v.get("required")}
            for code in forbidden:
                assert f"`{code}`" in responses["403"]["description"], (where, code)
            for code in ("not_authenticated", "session_expired", "connect_revoked"):
                assert f"`{code}`" in responses["401"]["description"], (where, code)
            assert "`idp_unavailable`" in responses["502"]["description"], where
            for code in ("session_store_unavailable", "refresh_in_progress", "idp_busy"):
                assert f"`{code}`" in responses["503"]["description"], (where, code)
            assert "Retry-After" in responses["503"]["headers"]


def test_every_error_response_is_problem_json() -> None:
    for path, item in build_document()["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status == "default" or status.startswith(("4", "5")):
                    assert PROBLEM_JSON in response.get("content", {}) or path.startswith("/api/"), (method, path)
                if status == "302":
                    assert response["headers"]["Location"]["required"] is True


def test_committed_document_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        f"openapi.json is out of date with bff; regenerate it from the repository root:  {REGENERATE}"
    )


async def test_dev_serves_the_document_and_serve_does_not() -> None:
    dev_app, _ = create_dev_app(free_port(), {})
    r = await _get(dev_app, "/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == build_document()
    # `bff serve` builds its app with create_app alone: no document there.
    app = create_app(_settings())
    assert not any(getattr(route, "path", None) == "/openapi.json" for route in app.routes)
    r = await _get(app, "/openapi.json")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_JSON


# --- schemathesis against `bff dev` -------------------------------------------------------------------------


def _header(response: schemathesis.Response, name: str) -> str:
    values = response.headers.get(name.lower()) or [""]
    return values[0]


def _is_upstream_error(case: Case, response: schemathesis.Response, body: Any) -> bool:
    """Kryptos's own error JSON passed through by ``/api/...``, not one of bff's problems.

    The emulator's shapes: the data API ``{"error", "message", "details"}``, the connect API
    ``{"success": false, "error", "code"}``. A problem from bff always has ``type`` ``urn:bff:problem:…``.
    """
    return (
        case.path.startswith("/api/")
        and _header(response, "content-type").split(";")[0].strip() == "application/json"
        and isinstance(body, dict)
        and "error" in body
        and not str(body.get("type", "")).startswith("urn:bff:problem:")
    )


def errors_are_problem_json(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """Every 4xx/5xx is bff's problem+json with a ``code``, or Kryptos's error JSON passed through."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if _is_upstream_error(case, response, body):
        return None
    content_type = _header(response, "content-type")
    assert content_type == PROBLEM_JSON, f"error with Content-Type {content_type!r}, not {PROBLEM_JSON}"
    if case.method.upper() == "HEAD":  # the headers of the GET answer, never a body (RFC 9110 §9.3.2)
        assert not response.content, "a body in the answer to HEAD"
        return None
    assert isinstance(body, dict), "problem+json body is not a JSON object"
    assert isinstance(body.get("code"), str) and body["code"], "problem without a `code`"
    assert body.get("type") == f"urn:bff:problem:{body['code']}", f"problem type {body.get('type')!r}"
    assert body.get("status") == response.status_code, "problem status differs from the HTTP status"
    return None


BASE_CHECKS: list[CheckFunction] = [not_a_server_error, errors_are_problem_json]
# The session operations' answers are also held to the document: status, media type, headers and body schema
# (the older operations pass Kryptos's JSON through, which the document types only loosely).
CONFORMANCE_CHECKS: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass
class FuzzReport:
    name: str
    cases: int = 0
    operations: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)  # "400 invalid_state", "200", ...
    upstream_errors: int = 0
    failures: list[str] = field(default_factory=list)

    def record(self, case: Case, response: schemathesis.Response) -> None:
        self.cases += 1
        self.operations.add(case.operation.label)
        body = _json_or_none(response)
        code = body.get("code") if isinstance(body, dict) and response.status_code >= 400 else None
        self.outcomes[f"{response.status_code} {code}" if code else str(response.status_code)] += 1
        if response.status_code >= 400 and _is_upstream_error(case, response, body):
            self.upstream_errors += 1

    def summary(self) -> str:
        outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(self.outcomes.items()))
        return (
            f"schemathesis ({self.name}): {self.cases} cases across {len(self.operations)} operations, "
            f"{len(self.failures)} failures, {self.upstream_errors} Kryptos errors passed through; {outcomes}"
        )


def _json_or_none(response: schemathesis.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _fuzz(
    schema: schemathesis.BaseSchema,
    base_url: str,
    report: FuzzReport,
    *,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> None:
    """Every operation, valid and invalid cases, MAX_EXAMPLES each, deterministically; failures are collected."""
    settings = hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # a fixed seed: the same cases on every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    for operation in _operations(schema):
        if operation.label in exclude:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = [*BASE_CHECKS, *(CONFORMANCE_CHECKS if operation.label in SESSION_OPERATIONS else ())]
            run = settings(
                hypothesis.given(case=operation.as_strategy(generation_mode=mode))(
                    _case_runner(base_url, report, mode, checks, headers=headers, cookies=cookies)
                )
            )
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # nothing to make invalid (no parameters)
                run()


def _case_runner(
    base_url: str,
    report: FuzzReport,
    mode: GenerationMode,
    checks: list[CheckFunction],
    *,
    headers: dict[str, str] | None,
    cookies: dict[str, str] | None,
) -> Callable[[Case], None]:
    def run(case: Case) -> None:
        # No shared session: a fresh connection per case. On a kept-alive connection `bff dev` answers each
        # response ~40 ms late (Nagle vs delayed ACK: its listening sockets are made without IPPROTO_TCP, so
        # asyncio never sets TCP_NODELAY), which would make this run several times slower.
        response = case.call(base_url=base_url, headers=headers, cookies=cookies, timeout=15)
        report.record(case, response)
        try:
            case.validate_response(response, checks=checks)
        except FailureGroup as group:
            request = response.request
            reason = "; ".join(f"{f.title}: {f.message}".replace("\n", " ") for f in group.exceptions)
            report.failures.append(
                f"[{mode.value}] {request.method} {request.url} -> {response.status_code} "
                f"{_header(response, 'content-type')!r} {response.content[:300]!r}\n    {reason}\n"
                f"    {case.as_curl_command(headers=dict(request.headers))}"
            )

    return run


@pytest.fixture(scope="module")
def bff_dev() -> Iterator[str]:
    """A ``bff dev`` subprocess on a free port (a mobile redirect URI set, so client=mobile is reachable)."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "BFF_MOBILE_REDIRECT_URIS": "com.example.app:/oauth2redirect",
        "BFF_LOG_LEVEL": "warning",
        # Cases must reach the handlers' own checks, not the per-address limits (tests/adversarial covers those).
        "BFF_RATE_LIMIT_LOGIN": "0",
        "BFF_RATE_LIMIT_CALLBACK": "0",
        "BFF_RATE_LIMIT_MOBILE_TOKEN": "0",
        "BFF_RATE_LIMIT_BACKCHANNEL": "0",
        "BFF_RATE_LIMIT_CONNECT": "0",
    }
    base = f"http://localhost:{port}"
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bff", "dev", "--port", str(port)],
            env=child_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def output() -> str:
            out.seek(0)
            return out.read()

        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", proc, output, what="bff dev", timeout=30)
            yield base
        finally:
            stop_process(proc, timeout=15)
            logs = output()
        # A 5xx the checks did not see would still leave a trace here.
        unhandled = [line for line in logs.splitlines() if " bff.app [" in line and "unhandled error" in line]
        assert not unhandled, logs[-4000:]


def _sign_in(base: str, username: str, *, user_agent: str = "python-httpx") -> dict[str, str]:
    """Sign in through the emulator as a browser would; the session cookie it ends with."""
    with httpx2.Client(follow_redirects=True, timeout=10, headers={"User-Agent": user_agent}) as client:
        r = client.get(f"{base}/auth/login", params={"login_hint": username})
        assert r.status_code == 200, r.text
        assert str(r.url) == base + "/"
        me = client.get(f"{base}/auth/session", headers={"X-CSRF": "1"})
        assert me.status_code == 200
        assert me.json()["is_admin"] is (username == "admin")
        return {name: value for name, value in client.cookies.items() if name == "bff-session"}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_only_problem_json(bff_dev: str, record_property: Any) -> None:
    base = bff_dev  # http://localhost:<port>: the public URL, so the origin and the sign-in redirects use it
    target = base.replace("localhost", "127.0.0.1")  # where the cases go (the cookie is passed explicitly)
    r = httpx2.get(f"{target}/openapi.json", timeout=5)
    assert r.status_code == 200
    assert r.json() == build_document()
    schema = _schema(r.json())
    started = time.monotonic()

    anonymous = FuzzReport("unauthenticated; session operations excluded")
    _fuzz(schema, target, anonymous, exclude=VERIFY_OTHER_METHODS | ANONYMOUS_EXCLUDED)

    cookies = _sign_in(base, "admin")
    assert cookies, "no session cookie after sign-in"
    signed_in = FuzzReport("signed in as admin; logout operations excluded")
    _fuzz(
        schema,
        target,
        signed_in,
        headers={"X-CSRF": "1", "Origin": base},
        cookies=cookies,
        exclude=LOGOUT_OPERATIONS | VERIFY_OTHER_METHODS,
    )
    # The custom check does catch a bad error body: the emulator's own 401 JSON, as if bff had said it.
    raw = requests.get(f"{target}/_kryptos/api/v1/userinfo", timeout=5)
    with pytest.raises(FailureGroup, match="errors_are_problem_json"):
        schema["/auth/session"]["GET"].Case().validate_response(raw, checks=[errors_are_problem_json])
    # The session survived the run: the authenticated cases really were authenticated.
    still = httpx2.get(f"{target}/auth/session", headers={"X-CSRF": "1"}, cookies=cookies, timeout=5)
    assert still.status_code == 200, still.text

    elapsed = time.monotonic() - started
    total = anonymous.cases + signed_in.cases
    operations = len(anonymous.operations | signed_in.operations)
    print(f"\n{anonymous.summary()}\n{signed_in.summary()}")
    print(f"schemathesis tried {total} cases across {operations} operations in {elapsed:.1f} s")
    record_property("schemathesis_cases", total)
    record_property("schemathesis_operations", operations)
    # Signed in, the forwarder was reached: Kryptos answered some cases itself.
    assert signed_in.outcomes["200"] > 0
    failures = anonymous.failures + signed_in.failures
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])


FIREFOX_ON_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_ON_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.mark.slow
def test_session_operations_answer_as_described(bff_dev: str) -> None:
    """Each session operation, called for real, answers as its operation says (status, media type, headers and
    schema), including what the fuzzing cannot reach: listed entries, ended sessions, the cleared cookie."""
    base = bff_dev
    target = base.replace("localhost", "127.0.0.1")
    schema = _schema(build_document())
    lena = "user_lena_5c1d9e"  # the emulator's `linked` user

    def call(label: str, cookies: dict[str, str] | None, status: int, **path: str) -> Any:
        method, template = label.split(" ")
        case = schema[template][method].Case(path_parameters=path, headers={"X-CSRF": "1", "Origin": base})
        response = case.call(base_url=target, cookies=cookies, timeout=15)
        case.validate_response(response, checks=[*BASE_CHECKS, *CONFORMANCE_CHECKS])
        assert response.status_code == status, (label, path, response.content[:300])
        body = json.loads(response.content)
        if status < 400:
            assert _header(response, "cache-control") == "no-store", label
        return body, response.headers.get("set-cookie") or []

    def clears_cookie(set_cookie: list[str]) -> bool:
        return any(c.startswith("bff-session=") and "max-age=0" in c.lower() for c in set_cookie)

    handle, sub = "0" * 32, {"sub": lena}
    for label in SESSION_OPERATIONS:  # no session
        params = {**({"handle": handle} if "{handle}" in label else {}), **(sub if "{sub}" in label else {})}
        assert call(label, None, 401, **params)[0]["code"] == "not_authenticated"

    firefox = _sign_in(base, "linked", user_agent=FIREFOX_ON_WINDOWS)
    safari = _sign_in(base, "linked", user_agent=SAFARI_ON_IOS)
    (listing, _) = call("GET /auth/sessions", safari, 200)
    entries = listing["sessions"]
    assert [(e["device"], e["kind"], e["current"]) for e in entries] == [
        ("Safari on iOS", "browser", True),
        ("Firefox on Windows", "browser", False),
    ]
    admin = _sign_in(base, "admin")
    (seen, _) = call("GET /api/admin/users/{sub}/sessions", admin, 200, **sub)
    assert seen["sub"] == lena
    assert {e["handle"] for e in seen["sessions"]} == {e["handle"] for e in entries}
    assert not any(e["current"] for e in seen["sessions"])
    (problem, _) = call("GET /api/admin/users/{sub}/sessions", safari, 403, **sub)
    assert problem["code"] == "forbidden"
    (problem, _) = call("DELETE /api/admin/users/{sub}/sessions", admin, 400, sub="a\x01b")
    assert problem["code"] == "invalid_parameter"

    # Another of one's own sessions, then every other, then one's own: only the last clears the cookie.
    (ended, set_cookie) = call("DELETE /auth/sessions/{handle}", safari, 200, handle=entries[1]["handle"])
    assert ended == {"ended": 1}
    assert not clears_cookie(set_cookie)
    (problem, _) = call("DELETE /auth/sessions/{handle}", safari, 404, handle=entries[1]["handle"])
    assert problem["code"] == "session_not_found"
    assert call("GET /auth/sessions", firefox, 401)[0]["code"] == "session_expired"
    _sign_in(base, "linked")
    (ended, set_cookie) = call("POST /auth/sessions/end-others", safari, 200)
    assert ended == {"ended": 1}
    assert not clears_cookie(set_cookie)
    (ended, set_cookie) = call("DELETE /auth/sessions/{handle}", safari, 200, handle=entries[0]["handle"])
    assert ended == {"ended": 1}
    assert clears_cookie(set_cookie)

    # An administrator: one session of a user, all of them, then all of its own (its cookie cleared).
    _sign_in(base, "linked")
    _sign_in(base, "linked")
    (seen, _) = call("GET /api/admin/users/{sub}/sessions", admin, 200, **sub)
    first = seen["sessions"][0]["handle"]
    (ended, _) = call("DELETE /api/admin/users/{sub}/sessions/{handle}", admin, 200, **sub, handle=first)
    assert ended == {"sub": lena, "ended": 1}
    (problem, _) = call("DELETE /api/admin/users/{sub}/sessions/{handle}", admin, 404, **sub, handle=first)
    assert problem["code"] == "session_not_found"
    (ended, set_cookie) = call("DELETE /api/admin/users/{sub}/sessions", admin, 200, **sub)
    assert ended == {"sub": lena, "ended": 1}
    assert not clears_cookie(set_cookie)
    (mine, _) = call("GET /api/admin/users/{sub}/sessions", admin, 200, sub="user_admin_ada")
    assert any(e["current"] for e in mine["sessions"])
    (ended, set_cookie) = call("DELETE /api/admin/users/{sub}/sessions", admin, 200, sub="user_admin_ada")
    assert ended["ended"] >= 1
    assert clears_cookie(set_cookie)


# Codes that exist in the error tree but never reach a client: a base class's default that is never raised
# bare, and the provider's refusal, which is always translated (login_failed, idp_unavailable, session_expired).
_NEVER_SENT = {"service_unavailable", "token_rejected"}


def test_every_error_code_bff_can_send_is_in_the_committed_document() -> None:
    """A client reads the error codes it may meet in openapi.json: a new code without a line there fails."""
    shipped = (REPO / "bff").rglob("*.py")
    sources = [p for p in shipped if "emulator" not in p.parts and p.name not in ("dev.py", "openapi.py")]
    codes: set[str] = set()
    for path in sources:
        text = path.read_text()
        codes |= set(re.findall(r'\bcode="([a-z_]+)"', text))
        codes |= set(re.findall(r'default_code(?::[^=]*)?\s*=\s*"([a-z_]+)"', text))
        codes |= set(re.findall(r'problem\(\s*\d+,\s*"([a-z_]+)"', text))
    assert {"rate_limited", "idp_busy", "request_header_fields_too_large", "session_expired"} <= codes
    document = COMMITTED.read_text()
    assert sorted(c for c in codes - _NEVER_SENT if f"`{c}`" not in document) == []
