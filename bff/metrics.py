"""Prometheus metrics: what is counted, and the separate port they are served on (never via the ingress).

Labels are route templates, methods, status codes, upstream names and outcome words: never an id, a
token, a user or a URL with a query, so no secret can reach a label and cardinality stays bounded.

With one worker the metrics server is a thread of that process. With several, ``bff serve`` points every
worker at one ``PROMETHEUS_MULTIPROC_DIR`` under /tmp (workers are spawned, so they import
prometheus_client after it is set) and the supervising process serves the aggregate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from bff import __version__

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

http_requests = Counter("bff_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
http_latency = Histogram(
    "bff_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
upstream_latency = Histogram(
    "bff_upstream_request_duration_seconds",
    "Time for one call to an upstream (data, connect, idp)",
    ["upstream"],
    buckets=_LATENCY_BUCKETS,
)
upstream_errors = Counter(
    "bff_upstream_errors_total", "Upstream calls that failed without an answer", ["upstream", "kind"]
)
sessions_created = Counter("bff_sessions_created_total", "Sessions created at sign-in")
sessions_ended = Counter("bff_sessions_ended_total", "Sessions ended", ["reason"])
refreshes = Counter("bff_token_refreshes_total", "Access-token refreshes by outcome", ["outcome"])
lock_waits = Counter("bff_refresh_lock_waits_total", "Refreshes that waited for another holder of the lock")
lock_wait_seconds = Histogram(
    "bff_refresh_lock_wait_seconds", "Time spent waiting for the refresh lock", buckets=_LATENCY_BUCKETS
)
errors = Counter("bff_errors_total", "Error responses by problem code", ["code"])
redis_errors = Counter("bff_redis_errors_total", "Session-store operations that failed")
# Connections bff.web.protocol answered and closed before the app saw a request: `reason` is header_timeout
# (slowloris) or headers_too_large.
connections_refused = Counter(
    "bff_connections_refused_total", "Connections closed before a whole request head arrived", ["reason"]
)
# Abuse limits (bff.services.ratelimit). `endpoint` is a route name, `limit` "address" or "browser": never the address.
rate_limited = Counter(
    "bff_rate_limited_total", "Requests refused by a per-client-address or per-browser limit", ["endpoint", "limit"]
)
# The provider budget: `call` is authorization_code, refresh_token or userinfo; `reason` budget or backoff.
idp_busy = Counter(
    "bff_idp_budget_refusals_total",
    "Provider calls not made: the budget was spent or a 429 said wait",
    ["call", "reason"],
)
connect_grants = Counter(
    "bff_connect_grants_total",
    "Kryptos Connect grants: stored, revoked (here or by an administrator), gone (revoked elsewhere), swept (idle)",
    ["event"],
)
idp_rate_limited = Counter("bff_idp_rate_limited_total", "429 answers from the identity provider", ["call"])
build_info = Gauge("bff_build_info", "Build information", ["version"], multiprocess_mode="max")
build_info.labels(version=__version__).set(1)


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh directory for the workers' metrics, removed when the server stops (one per run, never left
    behind in /tmp); set before any worker imports this module."""
    path = tempfile.mkdtemp(prefix="bff-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield path
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(path, ignore_errors=True)


def serve_metrics(port: int, *, multiprocess: bool, host: str = "0.0.0.0") -> None:  # noqa: S104 - in-cluster scrape
    """Start the /metrics server in a daemon thread of this process."""
    if multiprocess:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=host, registry=registry)
    else:
        start_http_server(port, addr=host)
