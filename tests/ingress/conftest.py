"""bff behind real ingress software: nginx and Caddy on loopback ask bff's ``/auth/verify`` and carry the
call to a recording stand-in for Kryptos themselves (:mod:`tests.support.ingress`).

Every test that asks for ``deploy`` runs once behind each ingress. The browser signs in at bff directly (the
emulator's redirect URIs name bff's port) and then uses the same cookie through the ingress: cookies are per
host, not per port, and with an http public URL the cookie is the plain host-only ``bff-session``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.ingress import (
    Ingress,
    RecordingUpstream,
    caddy_missing,
    nginx_missing,
    render,
    start_caddy,
    start_nginx,
)
from tests.support.redis_server import free_port
from tests.support.stack import MakeStack, Stack

HERE = Path(__file__).parent
DATA_API_PATH = "/data-api"  # the recording upstream's stand-ins for BFF_DATA_API_URL's and BFF_CONNECT_API_URL's paths
CONNECT_API_PATH = "/connect-api"
CSRF = {"X-CSRF": "1"}


def _start_ingress(kind: str, *, port: int, bff: str, verify: str, upstream: str) -> Ingress:
    if kind == "nginx":
        values = {
            "LISTEN": f"127.0.0.1:{port}",
            "BFF": bff,
            "BFF_VERIFY": verify,
            "DATA_API": upstream + DATA_API_PATH,
            "CONNECT_API": upstream + CONNECT_API_PATH,
        }
        return start_nginx(render(HERE / "nginx.conf.template", values), port=port)
    values = {
        "SITE": f"http://127.0.0.1:{port}",
        "BFF": bff,
        "BFF_VERIFY": verify,
        "DATA_API_ORIGIN": upstream,
        "DATA_API_PATH": DATA_API_PATH,
        "CONNECT_API_ORIGIN": upstream,
        "CONNECT_API_PATH": CONNECT_API_PATH,
    }
    return start_caddy(render(HERE / "Caddyfile.template", values), port=port)


@dataclass
class Deployment:
    """A browser's view (:attr:`url`, the ingress) and the test's (bff's stack, what reached Kryptos)."""

    kind: str
    stack: Stack
    ingress: Ingress
    upstream: RecordingUpstream

    @property
    def url(self) -> str:
        return self.ingress.url

    @property
    def origin_headers(self) -> dict[str, str]:
        """What the SPA sends on a state-changing call from its own origin (the ingress's)."""
        return {**CSRF, "Origin": self.url}

    def browser(self) -> httpx2.AsyncClient:
        return self.stack.client()

    async def sign_in(self, browser: httpx2.AsyncClient, username: str = "guest") -> str:
        """Sign in at bff; the cookie jar then sends the session cookie to the ingress as well."""
        final = await self.stack.login(browser, username)
        assert final.status_code == 302, final.text
        return str(browser.cookies[self.stack.settings.session_cookie_name])

    def access_tokens(self) -> list[str]:
        """The access tokens the provider issued to bff, oldest first."""
        return [body["access_token"] for body in self.stack.idp.token_responses() if "access_token" in body]

    def refreshes(self) -> int:
        """Refresh-token grants bff sent to the provider."""
        return sum(
            1
            for request, _ in self.stack.idp.exchanges
            if request.url.path.endswith("/token") and b"grant_type=refresh_token" in request.content
        )

    def output(self) -> str:
        return self.ingress.output()


Deploy = Callable[..., Deployment]


@pytest.fixture(params=["nginx", "caddy"])
def deploy(request: pytest.FixtureRequest, make_stack: MakeStack) -> Iterator[Deploy]:
    """``deploy(**settings)``: a recording upstream, an emulator and bff (trusting 127.0.0.1/32, the ingress's
    address), and the ingress in front; everything is stopped after the test."""
    kind: str = request.param
    missing = nginx_missing() if kind == "nginx" else caddy_missing()
    if missing:
        pytest.skip(missing)
    started: list[Ingress] = []
    upstreams: list[RecordingUpstream] = []

    def factory(**settings: Any) -> Deployment:
        upstream = RecordingUpstream().start()
        upstreams.append(upstream)
        port = free_port()
        settings.setdefault("trusted_proxies", ["127.0.0.1/32"])
        settings.setdefault("allowed_origins", [f"http://127.0.0.1:{port}"])
        settings.setdefault("verify_port", free_port())  # as deployed: /auth/verify on its own port
        stack = make_stack(**settings)
        ingress = _start_ingress(kind, port=port, bff=stack.url, verify=stack.verify_url, upstream=upstream.url)
        started.append(ingress)
        return Deployment(kind, stack, ingress, upstream)

    yield factory
    for ingress in started:
        ingress.stop()
    for upstream in upstreams:
        upstream.stop()
