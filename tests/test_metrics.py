"""The Prometheus metrics (:mod:`bff.metrics`) as a running stack counts them."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from tests.support.stack import Stack

CSRF = {"X-CSRF": "1"}


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_requests_upstreams_refreshes_and_sessions(stack: Stack) -> None:
    route = {"route": "/api/v1/integrations", "method": "GET", "status": "200"}
    before = {
        "requests": _value("bff_http_requests_total", **route),
        "upstream": _value("bff_upstream_request_duration_seconds_count", upstream="data"),
        "idp": _value("bff_upstream_request_duration_seconds_count", upstream="idp"),
        "refreshed": _value("bff_token_refreshes_total", outcome="refreshed"),
        "csrf": _value("bff_errors_total", code="csrf_required"),
    }
    async with stack.client() as client:
        await stack.login(client)
        for _ in range(3):
            assert (await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)).status_code == 200
        await stack.emulator_control("POST", "config", json={"data_api_failure": {"status": 401, "count": 1}})
        assert (await client.get(f"{stack.url}/api/v1/integrations", headers=CSRF)).status_code == 200
        assert (await client.get(f"{stack.url}/api/v1/integrations")).status_code == 403
    assert _value("bff_http_requests_total", **route) - before["requests"] == 4
    assert _value("bff_upstream_request_duration_seconds_count", upstream="data") - before["upstream"] == 5
    assert _value("bff_upstream_request_duration_seconds_count", upstream="idp") > before["idp"]
    assert _value("bff_token_refreshes_total", outcome="refreshed") - before["refreshed"] == 1
    assert _value("bff_errors_total", code="csrf_required") - before["csrf"] == 1
    exposition = generate_latest().decode()
    # Labels carry templates and codes only: no token, secret or session id can be in there.
    for secret in [*stack.idp.issued_secrets(), stack.client_secret]:
        assert secret not in exposition
