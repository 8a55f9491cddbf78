"""No response reflects the Host header (hardening E15).

Starlette's trailing-slash redirect built its ``Location`` from ``Host``: ``GET /auth/login/`` with
``Host: evil.example`` answered ``307 Location: http://evil.example/auth/login``. Raw requests with a forged
Host (and an absolute-form target) go to a real ``bff serve``; no header and no body may carry it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.adversarial.conftest import PrivateRedis
from tests.support.processes import Cluster
from tests.support.raw_http import head, request

pytestmark = [pytest.mark.redis, pytest.mark.slow]

EVIL = "evil.example"
# Known routes with a slash added, unknown paths, and the routes themselves.
SLASHED = ["/auth/login/", "/auth/session/", "/auth/callback/", "/api/v1/userinfo/", "/healthz/", "/readyz/"]
UNKNOWN = ["/", "/nope", "/static", "/api/", "/auth/", "/auth/mobile/token/", "/api/v1/integrations/x"]
ROUTES = ["/auth/login", "/auth/session", "/auth/callback?code=x&state=y", "/healthz", "/readyz", "/auth/logout?sid=x"]


def test_no_response_reflects_a_forged_host(replicas: Any, private_redis: PrivateRedis) -> None:
    cluster: Cluster = replicas(1)
    port = cluster.replicas[0].port
    seen: dict[str, int] = {}
    for path in SLASHED + UNKNOWN + ROUTES:
        for target in (path, f"http://{EVIL}{path}"):  # origin-form, and absolute-form naming the host too
            headers = {"Host": EVIL, "X-Forwarded-Host": EVIL, "X-CSRF": "1"}
            r = request(port, head("GET", target, headers))
            seen[target] = r.status
            assert EVIL not in repr(r.headers).lower(), (target, r.status, r.headers)
            assert EVIL.encode() not in r.body.lower(), (target, r.status, r.body[:300])
            if path in SLASHED or path in UNKNOWN:
                assert r.status == 404, (target, r.status)
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "not_found"
                assert "location" not in r.headers
    print(f"\n{len(seen)} requests with Host: {EVIL}; statuses {sorted(set(seen.values()))}; none reflects it")
    assert len(seen) == 2 * (len(SLASHED) + len(UNKNOWN) + len(ROUTES))
