"""OpenTelemetry traces (bff/tracing.py), end to end against an in-process OTLP/HTTP receiver.

The traced bff runs as ``bff serve`` processes (the TracerProvider is per process, so nothing here changes
the test process's own state): one replica that trusts no proxy, one that trusts 127.0.0.1. An ASGI tap in
front of the emulator keeps what the provider and the data API received (``traceparent``) and what the
token endpoint issued (every token, the ID token included), so the secret scan knows every value to look for.
A fresh interpreter shows that, with no ``OTEL_*`` variable, serving requests imports no tracing code.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from bff import tracing
from bff.sessions.store import session_handle
from tests.support.emulator_tap import EmulatorTap
from tests.support.otlp_receiver import CLIENT, SERVER, OtlpReceiver, ReceivedSpan
from tests.support.processes import Cluster, Replica, expire_access_token, start_cluster_on

pytestmark = pytest.mark.redis

CLIENT_ID = "bff-traced"
CSRF = {"X-CSRF": "1"}
_LOG_WAIT = 10.0  # seconds a replica may take to write an access line
# Every attribute key a span may carry. A new one must be added here on purpose, after checking that no
# value of it can hold a token, a cookie, a key, a query string or a user's data.
ALLOWED_ATTRIBUTES = {
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "bff.request_id",
    "error.type",
    "db.system.name",
    "db.operation.name",
    "db.stored_procedure.name",
    "server.address",
    "server.port",
    "peer.service",
    "url.template",
}


@dataclass
class Traced:
    cluster: Cluster
    receiver: OtlpReceiver
    tap: EmulatorTap

    @property
    def untrusting(self) -> Replica:
        return self.cluster.replicas[0]

    def trusting(self) -> Replica:
        """The replica that trusts 127.0.0.1 as a proxy, started by the first test that needs it."""
        if len(self.cluster.replicas) < 2:
            self.cluster.start_replica(BFF_TRUSTED_PROXIES="127.0.0.1/32")
        return self.cluster.replicas[1]

    def server_span(self, request_id: str) -> ReceivedSpan:
        """The one SERVER span of the request sent with ``X-Request-ID: request_id`` (waiting for it)."""

        def mine(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
            return [s for s in spans if s.kind == SERVER and s.attributes.get("bff.request_id") == request_id]

        found = mine(self.receiver.wait_for(lambda spans: bool(mine(spans))))
        assert len(found) == 1, found
        return found[0]

    def children(self, parent: ReceivedSpan) -> list[ReceivedSpan]:
        return [s for s in self.receiver.spans() if s.parent_span_id == parent.span_id]


@pytest.fixture(scope="module")
def traced(redis_url: str) -> Iterator[Traced]:
    """An emulator (behind the tap) and traced ``bff serve`` replicas exporting to one receiver."""
    receiver = OtlpReceiver().start()
    tap = EmulatorTap()

    env = {
        "BFF_LOG_LEVEL": "info",  # the access lines
        "BFF_SESSION_CACHE_SECONDS": "0",  # every call reads its session from Redis
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans reach the receiver soon after each request
    }
    cluster = start_cluster_on(tap.app, redis_url, replicas=0, overrides=env)
    try:
        cluster.start_replica()
        yield Traced(cluster, receiver, tap)
    finally:
        cluster.stop()
        receiver.stop()


def _ids() -> Iterator[str]:
    prefix = secrets.token_hex(4)
    n = 0
    while True:
        n += 1
        yield f"t{prefix}-{n}"


async def _access_line(replica: Replica, request_id: str) -> dict[str, Any]:
    """The replica's JSON access line for ``request_id`` (a process's log cannot be awaited: it is polled; lines
    are written in batches every 0.1 s)."""
    deadline = time.monotonic() + _LOG_WAIT
    while True:
        for line in replica.output().splitlines():
            if line.startswith("{") and f'"{request_id}"' in line:
                entry: dict[str, Any] = json.loads(line)
                if entry.get("logger") == "bff.access" and entry.get("request_id") == request_id:
                    return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no access line for {request_id} within {_LOG_WAIT} s:\n{replica.output()[-2000:]}")
        await asyncio.sleep(0.05)


def _strings(span: ReceivedSpan) -> Iterator[str]:
    """Every text a span carries: its name, attribute values, resource, events, links and status."""
    yield span.name
    yield from (str(v) for v in span.attributes.values())
    yield from (str(v) for v in span.resource.values())
    yield span.raw.status.message
    for event in span.raw.events:
        yield event.name
        yield from (str(a.value) for a in event.attributes)
    for link in span.raw.links:
        yield from (str(a.value) for a in link.attributes)


def _traceparent(value: str) -> tuple[str, str]:
    version, trace_id, parent_id, _flags = value.split("-")
    assert version == "00"
    return trace_id, parent_id


async def _sign_in(browser: httpx2.AsyncClient, replica: Replica, login_id: str, callback_id: str) -> tuple[str, str]:
    """A browser sign-in as ``guest``, each bff request with its own request id; the session cookie's value and
    the query of the callback (the authorization code and state)."""
    start = await browser.get(
        f"{replica.url}/auth/login", params={"login_hint": "guest"}, headers={"X-Request-ID": login_id}
    )
    assert start.status_code == 302, start.text
    approve = await browser.get(start.headers["location"])
    query = urlsplit(approve.headers["location"]).query
    done = await browser.get(f"{replica.url}/auth/callback?{query}", headers={"X-Request-ID": callback_id})
    assert done.status_code == 302, done.text
    return str(browser.cookies["bff-session"]), query


async def test_spans_of_a_sign_in_and_an_api_call(traced: Traced) -> None:
    ids = _ids()
    replica = traced.untrusting
    async with httpx2.AsyncClient(timeout=15) as browser:
        login_id, callback_id, api_id, job_id, unknown_id = (next(ids) for _ in range(5))
        cookie, query = await _sign_in(browser, replica, login_id, callback_id)
        # The access token is now due: the API call refreshes it (a provider call) before forwarding.
        session_id = await expire_access_token(traced.cluster, cookie)
        api = await browser.get(
            f"{replica.url}/api/v1/integrations", params={"page": 1}, headers={**CSRF, "X-Request-ID": api_id}
        )
        assert api.status_code == 200, api.text
        job = "job0" + secrets.token_hex(8)
        sync = await browser.get(f"{replica.url}/api/v1/sync/{job}", headers={**CSRF, "X-Request-ID": job_id})
        unknown_path = f"/no/such/{secrets.token_hex(8)}"
        unknown = await browser.get(f"{replica.url}{unknown_path}", headers={"X-Request-ID": unknown_id})
        assert unknown.status_code == 404

    # One SERVER span per request, named and labelled by the route's template, never the path.
    login, callback, call = (traced.server_span(i) for i in (login_id, callback_id, api_id))
    for span, route, status in ((login, "/auth/login", 302), (callback, "/auth/callback", 302)):
        assert span.name == f"GET {route}"
        assert span.attributes["http.route"] == route
        assert span.attributes["http.response.status_code"] == status
        assert span.attributes["http.request.method"] == "GET"
    assert call.name == "GET /api/v1/integrations"
    assert call.attributes["http.response.status_code"] == 200
    assert call.parent_span_id == ""  # a new trace: this client is not a trusted proxy
    sync_span = traced.server_span(job_id)
    assert sync_span.name == "GET /api/v1/sync/{jobId}"
    assert sync_span.attributes["http.route"] == "/api/v1/sync/{jobId}"
    assert sync_span.attributes["http.response.status_code"] == sync.status_code
    unknown_span = traced.server_span(unknown_id)
    assert unknown_span.name == "GET"
    assert "http.route" not in unknown_span.attributes
    assert unknown_span.attributes["http.response.status_code"] == 404

    # The sign-in's code exchange: a provider span under the callback's span, in its trace.
    exchange = [s for s in traced.children(callback) if s.name == "POST /oidc/token"]
    assert len(exchange) == 1
    assert exchange[0].kind == CLIENT
    assert exchange[0].trace_id == callback.trace_id
    assert exchange[0].attributes["peer.service"] == "oidc-provider"
    assert exchange[0].attributes["http.response.status_code"] == 200

    # The API call: Redis, the provider (the refresh) and the upstream, each a CLIENT span under its span.
    children = traced.children(call)
    assert all(c.kind == CLIENT and c.trace_id == call.trace_id for c in children)
    redis_ops = [c for c in children if c.attributes.get("db.system.name") == "redis"]
    assert "GET" in {c.attributes["db.operation.name"] for c in redis_ops}
    assert all(c.name.startswith("redis ") for c in redis_ops)
    refresh = [c for c in children if c.name == "POST /oidc/token"]
    assert len(refresh) == 1
    upstream = [c for c in children if c.attributes.get("peer.service") == "kryptos-data"]
    assert len(upstream) == 1
    assert upstream[0].name == "GET"
    assert upstream[0].attributes["http.response.status_code"] == 200

    # W3C traceparent went to the upstream and to the provider, naming the trace and each client span.
    assert (call.trace_id, upstream[0].span_id) in map(_traceparent, traced.tap.traceparents("/v1/integrations"))
    assert (call.trace_id, refresh[0].span_id) in map(_traceparent, traced.tap.traceparents("/token"))
    assert (callback.trace_id, exchange[0].span_id) in map(_traceparent, traced.tap.traceparents("/token"))

    # The access line names the trace and the server span.
    line = await _access_line(replica, api_id)
    assert (line["trace_id"], line["span_id"]) == (call.trace_id, call.span_id)

    # Nothing secret or personal anywhere in what was exported: not in any decoded field, not in the bytes.
    codes = parse_qs(query)
    never = {
        *traced.tap.issued(),  # access, refresh and ID tokens, from the sign-in and from the refresh
        traced.cluster.env["BFF_CLIENT_SECRET"],
        traced.cluster.env["BFF_SESSION_SECRETS"],
        traced.cluster.env["BFF_ENCRYPTION_KEYS"],
        cookie,
        session_id,
        session_handle(session_id),  # the digest in the session's Redis key name
        codes["code"][0],
        codes["state"][0],
        job,
        unknown_path,
        "guest",  # the user's name went only into the login query
    }
    assert len(traced.tap.issued()) >= 5  # the exchange's three tokens and the refresh's new ones
    spans = traced.receiver.spans()
    for span in spans:
        assert set(span.attributes) <= ALLOWED_ATTRIBUTES, span
        for text in _strings(span):
            leaked = [value for value in never if value in text]
            assert not leaked, (span.name, text)
    for body in traced.receiver.bodies:
        assert not [value for value in never if value.encode() in body]
    assert {s.resource.get("service.name") for s in spans} == {"bff"}


async def test_a_traceparent_is_adopted_only_from_a_trusted_proxy(traced: Traced) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    incoming = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
    ids = _ids()
    untrusted_id, trusted_id = next(ids), next(ids)
    async with httpx2.AsyncClient(timeout=15) as client:
        for replica, request_id in ((traced.untrusting, untrusted_id), (traced.trusting(), trusted_id)):
            response = await client.get(f"{replica.url}/healthz", headers={**incoming, "X-Request-ID": request_id})
            assert response.status_code == 200
    untrusted, trusted = traced.server_span(untrusted_id), traced.server_span(trusted_id)
    # From a client: a trace of bff's own, with no parent the caller chose.
    assert untrusted.trace_id != trace_id
    assert untrusted.parent_span_id == ""
    # From a trusted proxy: the proxy's trace, continued.
    assert (trusted.trace_id, trusted.parent_span_id) == (trace_id, parent_id)
    assert (await _access_line(traced.trusting(), trusted_id))["trace_id"] == trace_id


async def test_a_trace_the_proxy_did_not_sample_goes_on_unsampled(traced: Traced) -> None:
    """A trusted proxy's "not sampled" (trace-flags 00) is honoured: nothing recorded, and the upstream is told
    the same trace, still not sampled (W3C Trace Context: the sampled flag)."""
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    ids = _ids()
    replica = traced.trusting()
    async with httpx2.AsyncClient(timeout=15) as browser:
        await _sign_in(browser, replica, next(ids), next(ids))
        headers = {**CSRF, "traceparent": f"00-{trace_id}-{parent_id}-00"}
        response = await browser.get(f"{replica.url}/api/v1/integrations", headers=headers)
        assert response.status_code == 200, response.text
        after_id = next(ids)
        await browser.get(f"{replica.url}/healthz", headers={"X-Request-ID": after_id})
    sent = [tp for tp in traced.tap.traceparents("/v1/integrations") if tp.split("-")[1] == trace_id]
    assert len(sent) == 1
    assert sent[0].endswith("-00")
    # Spans leave a process in the order they end: once a later request's span is here, any of the call's is too.
    traced.server_span(after_id)
    assert not [s for s in traced.receiver.spans() if s.trace_id == trace_id]


async def test_an_unknown_method_is_not_recorded_as_sent(traced: Traced) -> None:
    request_id = next(_ids())
    async with httpx2.AsyncClient(timeout=15) as client:
        response = await client.request(
            "PROPFIND", f"{traced.untrusting.url}/healthz", headers={"X-Request-ID": request_id}
        )
    assert response.status_code == 405
    span = traced.server_span(request_id)
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.name == "_OTHER /healthz"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),  # not shipped: off, with a warning
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    ],
)
def test_which_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


# Run in a fresh interpreter: signs in and makes an API call through a whole stack, then prints the
# opentelemetry modules loaded beyond those redis-py loads on its own import (it imports its metrics
# support whenever the OpenTelemetry SDK is installed), and whether bff's tracing is on.
_OFF_SCRIPT = """
import asyncio, json, sys
import redis.asyncio
before = {m for m in sys.modules if m.startswith("opentelemetry")}
import httpx2
from bff import tracing
from tests.support.stack import start_stack

async def main():
    stack = start_stack(redis_url=sys.argv[1])
    try:
        async with stack.client() as browser:
            await stack.login(browser)
            answer = await browser.get(stack.url + "/api/v1/integrations", headers={"X-CSRF": "1"})
            assert answer.status_code == 200, answer.text
    finally:
        stack.stop()

asyncio.run(main())
after = {m for m in sys.modules if m.startswith("opentelemetry")}
print(json.dumps({"added": sorted(after - before), "on": tracing._active is not None}))
"""


def test_off_without_otel_variables_imports_no_tracing_code(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", _OFF_SCRIPT, redis_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"added": [], "on": False}


@pytest.mark.skipif(tracing.wanted(os.environ), reason="the suite itself runs with OTEL_* variables set")
def test_hooks_are_no_ops_when_off() -> None:
    assert tracing._active is None
    assert tracing.server_span("GET", {b"traceparent": b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"}) is None
    with tracing.redis_span("GET") as redis_span, tracing.http_span("GET", "http://x/", peer="p") as http_span:
        assert redis_span is None
        assert http_span is None
