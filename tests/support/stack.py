"""A running stack for end-to-end tests: the Kryptos emulator and a ``bff`` both on real loopback ports.

The BFF's provider client goes through :class:`RecordingTransport` (a real HTTP transport that also keeps
what the provider answered), so tests can see the tokens that were issued without touching internals,
and can rewrite provider answers to play a misbehaving or malicious provider.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2

from bff.app import create_app
from bff.config import Settings
from bff.services.container import Services
from bff.sessions import SessionManager
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff.sessions.store import KeyValueStore
from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app
from tests.support.processes import expire_with
from tests.support.redis_server import free_port
from tests.support.servers import ServerThread, stop_all

CLIENT_ID = "bff-test"
Rewriter = Callable[[httpx2.Request, httpx2.Response], httpx2.Response]


# The provider is plain HTTP on loopback: one TLS context for every transport, instead of loading the CA
# bundle again for each stack (~30 ms of CPU each, hundreds of stacks per run).
_TLS = ssl.create_default_context()


class RecordingTransport(httpx2.AsyncHTTPTransport):
    """Real HTTP, plus a log of (request, response body) and optional response rewriting per test."""

    def __init__(self) -> None:
        super().__init__(verify=_TLS)
        self.exchanges: list[tuple[httpx2.Request, bytes]] = []
        self.rewriters: list[Rewriter] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await super().handle_async_request(request)
        body = await response.aread()
        response = httpx2.Response(response.status_code, headers=response.headers, content=body, request=request)
        for rewrite in self.rewriters:
            response = rewrite(request, response)
        self.exchanges.append((request, response.content))
        return response

    def token_responses(self) -> list[dict[str, Any]]:
        return [json.loads(body) for req, body in self.exchanges if req.url.path.endswith("/token") and body]

    def issued_secrets(self) -> set[str]:
        found: set[str] = set()
        for body in self.token_responses():
            found.update(str(body[k]) for k in ("access_token", "refresh_token", "id_token") if body.get(k))
        return found


@dataclass
class Stack:
    settings: Settings
    emulator: ServerThread
    bff: ServerThread
    emulator_config: EmulatorConfig
    idp: RecordingTransport
    client_secret: str
    servers: list[ServerThread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.bff.url

    @property
    def verify_url(self) -> str:
        """Where /auth/verify is served: BFF_VERIFY_PORT when set, else the main port."""
        port = self.settings.verify_port
        return f"http://127.0.0.1:{port}" if port else self.url

    @property
    def services(self) -> Services:
        services = self.bff.app.state.services
        assert isinstance(services, Services)
        return services

    def client(self, **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=15, **kwargs)

    async def login(self, client: httpx2.AsyncClient, username: str = "guest", return_to: str = "/") -> httpx2.Response:
        """Sign in through the emulator (login_hint auto-approves); returns the BFF's final redirect."""
        response = await client.get(f"{self.url}/auth/login", params={"return_to": return_to, "login_hint": username})
        for _ in range(5):
            if response.status_code != 302:
                return response
            location = urljoin(str(response.url), response.headers["location"])
            if urlsplit(location).path == "/auth/callback" or not location.startswith(self.url):
                response = await client.get(location)
                continue
            return response
        raise AssertionError("too many redirects during login")

    async def authorize(self, client: httpx2.AsyncClient, username: str = "guest") -> tuple[str, dict[str, str]]:
        """Start a login and let the emulator approve it; returns the callback URL and its parameters."""
        start = await client.get(f"{self.url}/auth/login", params={"login_hint": username})
        assert start.status_code == 302, start.text
        approve = await client.get(start.headers["location"])
        assert approve.status_code == 302, approve.text
        callback = approve.headers["location"]
        return callback, {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}

    async def introspect(self, token: str) -> dict[str, Any]:
        async with httpx2.AsyncClient() as c:
            r = await c.post(
                f"{self.emulator_config.issuer}/token/introspection",
                data={"token": token, "client_id": CLIENT_ID, "client_secret": self.client_secret},
            )
            r.raise_for_status()
            result: dict[str, Any] = r.json()
            return result

    async def emulator_control(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx2.AsyncClient() as c:
            r = await c.request(method, f"{self.emulator.url}/_emulator/{path}", **kwargs)
            r.raise_for_status()
            return r.json() if r.content else None

    async def expire_access_token(self, cookie: str) -> None:
        """Jump the session's access token past expiry (no sleeping), with bff's own session code on this
        test's event loop and the stack's Redis (the running bff's objects belong to its server thread)."""
        settings = self.settings
        store = RedisStore.from_url(settings.redis_url.get_secret_value())
        keyring = Keyring([k.get_secret_value() for k in settings.encryption_keys])
        manager = SessionManager(store, keyring, lifetimes=Lifetimes.from_settings(settings), clock=time.time)
        try:
            await expire_with(manager, self.services.session_codec, cookie)
        finally:
            await store.aclose()

    def add_replica(self) -> str:
        """Another bff process-alike (its own app, caches and connections) on the same Redis and emulator;
        returns its URL. Cookies are per host, not per port, so one client's cookies reach both."""
        replica = ServerThread(create_app(self.settings, idp_transport=RecordingTransport()), port=free_port())
        self.servers.append(replica.start())
        return replica.url

    def stop(self) -> None:
        stop_all(self.servers)


def start_stack(
    *,
    redis_url: str | None,
    store: KeyValueStore | None = None,
    emulator_options: dict[str, Any] | None = None,
    client_auth_methods: tuple[str, ...] = ("client_secret_post", "client_secret_basic"),
    idp_rewriters: tuple[Rewriter, ...] = (),
    clock: Callable[[], float] | None = None,
    **settings_overrides: Any,
) -> Stack:
    bff_port = free_port()
    bff_url = f"http://127.0.0.1:{bff_port}"
    client_secret = secrets.token_urlsafe(24)
    emulator_port = free_port()
    emulator_config = EmulatorConfig(
        base_url=f"http://127.0.0.1:{emulator_port}",
        clients=[
            EmulatorClient(
                client_id=CLIENT_ID,
                client_secret=client_secret,
                redirect_uris=[f"{bff_url}/auth/callback"],
                post_logout_redirect_uris=[f"{bff_url}/"],
                backchannel_logout_uri=f"{bff_url}/auth/backchannel-logout",
                token_endpoint_auth_methods=client_auth_methods,
            )
        ],
        **(emulator_options or {}),
    )
    values: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "issuer": emulator_config.issuer,
        "public_url": bff_url,
        "data_api_url": emulator_config.data_api_url,
        "connect_api_url": emulator_config.connect_api_url,
        "redis_url": redis_url or "memory://",
        "session_secrets": [secrets.token_urlsafe(32)],
        "encryption_keys": [secrets.token_urlsafe(32)],
        "metrics_port": 0,
        "admin_subjects": ["user_admin_ada"],
        # Off: the sweep's schedule is one key of the Redis the whole run shares, and a stack whose clock a
        # test moved ahead would take other tests' live sessions for ended. Tests of the sweep turn it on.
        "session_sweep_interval": 0,
    }
    values.update(settings_overrides)
    settings = Settings.model_validate(values)
    idp = RecordingTransport()
    idp.rewriters.extend(idp_rewriters)
    emulator = ServerThread(create_emulator_app(emulator_config), port=emulator_port)
    kwargs: dict[str, Any] = {"store": store, "idp_transport": idp}
    if clock is not None:
        kwargs["clock"] = clock
    bff = ServerThread(create_app(settings, **kwargs), port=bff_port, extra_port=settings.verify_port)
    stack = Stack(settings, emulator, bff, emulator_config, idp, client_secret)
    try:
        stack.servers.append(emulator.start())
        stack.servers.append(bff.start())
    except BaseException:
        stack.stop()
        raise
    return stack


# The `make_stack` fixture (tests/conftest.py): start_stack with the test's Redis, stopped after the test.
MakeStack = Callable[..., Stack]
