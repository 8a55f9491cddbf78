"""Fixtures for the interop suite: node ``oidc-provider`` + a data API stand-in + a ``bff``, all on loopback.

The whole directory is skipped, saying why, when ``node`` or ``npm`` is missing or the npm registry cannot
be reached for the one-time ``npm ci``. One provider process per configuration: the client_secret_post and
client_secret_basic stacks are shared by a module, the key-rotation stack (which restarts its provider) is
its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
import pytest

from bff.app import create_app
from bff.config import Settings
from tests.interop.peers import (
    HERE,
    DataApiState,
    NodeProvider,
    bff_client,
    create_data_api,
    private_jwks,
    resource_server_client,
    signing_key,
)
from tests.support.redis_server import free_port
from tests.support.servers import ServerThread
from tests.support.stack import RecordingTransport

CLIENT_ID = "bff-interop"
DATA_API_CLIENT_ID = "kryptos-data-api"
CSRF = {"X-CSRF": "1"}
# Short enough that the "refresh on the path" scenarios run in seconds: the BFF refreshes a token that expires
# within 60 s (or, once refreshed, half-way through one this short), so these stacks refresh on nearly every call.
SHORT_AT_TTL = 3
_NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "network", "fetch failed")


@pytest.fixture(scope="session")
def oidc_provider_package() -> Path:
    """``tests/interop/node_modules`` from the lockfile, installed once (``npm ci``) when missing."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the oidc-provider interop suite needs Node.js 20+")
    installed = HERE / "node_modules" / "oidc-provider" / "package.json"
    # Test workers (-n) start together: one installs, the others wait for it on a lock, then find it done.
    lock_path = Path(tempfile.gettempdir()) / f"bff-interop-npm-{hashlib.sha256(bytes(HERE)).hexdigest()[:12]}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install(installed)
    return HERE / "node_modules"


def _install(installed: Path) -> None:
    if not installed.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot install oidc-provider for the interop suite")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-800:]
            if any(marker in output for marker in _NETWORK_ERRORS):
                pytest.skip(f"npm registry unreachable, oidc-provider not installed:\n{output}")
            raise RuntimeError(f"npm ci failed in {HERE}:\n{output}")


@dataclass
class InteropStack:
    provider: NodeProvider
    data_api: DataApiState
    settings: Settings
    idp: RecordingTransport
    client_secret: str
    servers: list[ServerThread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.settings.public_url

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=15)

    async def follow_provider(self, client: httpx2.AsyncClient, response: httpx2.Response) -> str:
        """Follow redirects while they stay on the provider; return the first URL that leaves it."""
        for _ in range(10):
            assert response.status_code in (302, 303), f"{response.status_code} {response.text[:500]}"
            location = urljoin(str(response.url), response.headers["location"])
            if not location.startswith(self.provider.origin + "/"):
                return location
            response = await client.get(location)
        raise AssertionError("too many redirects at the provider")

    async def authorize(
        self, client: httpx2.AsyncClient, username: str, *, prompt: str | None = "consent"
    ) -> tuple[str, dict[str, str]]:
        """Start a login at the BFF, let the provider sign in ``username``; the callback URL and its query."""
        params = {"login_hint": username, **({"prompt": prompt} if prompt else {})}
        start = await client.get(f"{self.url}/auth/login", params=params)
        assert start.status_code == 302, start.text
        assert start.headers["location"].startswith(self.provider.endpoint("/auth?"))
        callback = await self.follow_provider(client, start)
        assert callback.startswith(f"{self.url}/auth/callback?"), callback
        return callback, {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}

    async def login(self, client: httpx2.AsyncClient, username: str, *, prompt: str | None = "consent") -> None:
        """A whole sign-in; offline_access (a refresh token) needs ``prompt=consent`` at this provider."""
        callback, _ = await self.authorize(client, username, prompt=prompt)
        done = await client.get(callback)
        assert done.status_code == 302, done.text
        assert done.headers["location"] == "/"

    async def session(self, client: httpx2.AsyncClient) -> httpx2.Response:
        return await client.get(f"{self.url}/auth/session", headers=CSRF)

    async def integrations(self, client: httpx2.AsyncClient) -> httpx2.Response:
        return await client.get(f"{self.url}/api/v1/integrations", headers=CSRF)

    async def logout(self, client: httpx2.AsyncClient) -> httpx2.Response:
        return await client.post(f"{self.url}/auth/logout", headers={**CSRF, "Origin": self.url})

    def token_responses(self, mark: int = 0) -> list[dict[str, Any]]:
        """What the provider's token endpoint answered the BFF, after exchange number ``mark``."""
        bodies = []
        for request, body in self.idp.exchanges[mark:]:
            if request.url.path == "/oidc/token" and body:
                bodies.append(httpx2.Response(200, content=body).json())
        return bodies

    def token_requests(self, mark: int = 0) -> list[httpx2.Request]:
        return [request for request, _ in self.idp.exchanges[mark:] if request.url.path == "/oidc/token"]

    async def provider_token(self, form: dict[str, str]) -> httpx2.Response:
        """A token request straight to the provider, as this client (client_secret_post)."""
        async with httpx2.AsyncClient(timeout=10) as c:
            return await c.post(
                self.provider.endpoint("/token"),
                data={**form, "client_id": CLIENT_ID, "client_secret": self.client_secret},
            )

    async def introspect(self, token: str) -> dict[str, Any]:
        async with httpx2.AsyncClient(timeout=10) as c:
            response = await c.post(
                self.provider.endpoint("/token/introspection"),
                data={"token": token, "client_id": DATA_API_CLIENT_ID, "client_secret": self.data_api.client_secret},
            )
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.provider.stop()


def start_interop_stack(
    workdir: Path,
    redis_url: str,
    *,
    token_auth_method: str = "client_secret_post",  # noqa: S107 - a method name
    access_token_ttl: int = SHORT_AT_TTL,
    keys: dict[str, Any] | None = None,
    conform_id_token_claims: bool = False,
) -> InteropStack:
    bff_port = free_port()
    bff_url = f"http://127.0.0.1:{bff_port}"
    # Characters that RFC 6749 §2.3.1 makes the client form-urlencode before Basic encoding.
    secret = secrets.token_urlsafe(24) + "+/:%= ~"
    data_api_secret = secrets.token_urlsafe(24)
    provider = NodeProvider(
        workdir=workdir,
        clients=[
            bff_client(CLIENT_ID, secret, bff_url, token_auth_method),
            resource_server_client(DATA_API_CLIENT_ID, data_api_secret),
        ],
        jwks=keys or private_jwks(signing_key("interop-key-1")),
        access_token_ttl=access_token_ttl,
        conform_id_token_claims=conform_id_token_claims,
    )
    data_api = DataApiState(
        introspection_endpoint=provider.endpoint("/token/introspection"),
        client_id=DATA_API_CLIENT_ID,
        client_secret=data_api_secret,
        expected_client_id=CLIENT_ID,
        expected_client_secret=secret,
    )
    data_server = ServerThread(create_data_api(data_api))
    settings = Settings.model_validate(
        {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "token_auth_method": token_auth_method,
            "issuer": provider.issuer,
            "public_url": bff_url,
            "data_api_url": data_server.url + "/api",
            "connect_api_url": data_server.url + "/connect",
            "redis_url": redis_url,
            "session_secrets": [secrets.token_urlsafe(32)],
            "encryption_keys": [secrets.token_urlsafe(32)],
            "metrics_port": 0,
        }
    )
    idp = RecordingTransport()
    stack = InteropStack(provider, data_api, settings, idp, secret)
    try:
        provider.start()
        stack.servers.append(data_server.start())
        stack.servers.append(ServerThread(create_app(settings, idp_transport=idp), port=bff_port).start())
    except BaseException:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def make_interop_stack(
    oidc_provider_package: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., InteropStack]]:
    stacks: list[InteropStack] = []

    def factory(**kwargs: Any) -> InteropStack:
        stack = start_interop_stack(tmp_path_factory.mktemp("oidc-provider"), redis_url, **kwargs)
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def post_stack(make_interop_stack: Callable[..., InteropStack]) -> InteropStack:
    """The provider's client allows only client_secret_post; access tokens live SHORT_AT_TTL seconds."""
    return make_interop_stack(token_auth_method="client_secret_post")


@pytest.fixture(scope="module")
def basic_stack(make_interop_stack: Callable[..., InteropStack]) -> InteropStack:
    """The provider's client allows only client_secret_basic."""
    return make_interop_stack(token_auth_method="client_secret_basic")
