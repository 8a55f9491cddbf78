"""The real peers of the interop suite: node ``oidc-provider`` as a child process, and a data API stand-in.

:class:`NodeProvider` writes a JSON configuration (clients, accounts, signing keys, access-token lifetime,
store file), runs ``node provider.mjs`` on a loopback port, waits for its readiness line and stops it by
PID. :meth:`NodeProvider.restart` starts it again on the same port and store with another JWKS: grants and
tokens survive, the signing key changes.

:func:`create_data_api` is the Kryptos data API as the BFF sees it (``/api/v1/integrations``,
``/api/v1/userinfo``), accepting the provider's tokens through RFC 7662 introspection, because the bundled
emulator only accepts tokens it issued itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.redis_server import free_port

HERE = Path(__file__).parent
PROVIDER_SCRIPT = HERE / "provider.mjs"
MOUNT = "/oidc"


def signing_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})


def private_jwks(*keys: RSAKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=True) for key in keys]}


@dataclass(frozen=True)
class Account:
    username: str
    sub: str
    name: str
    email: str

    def as_config(self) -> dict[str, str]:
        return {"sub": self.sub, "name": self.name, "email": self.email, "preferred_username": self.username}


ACCOUNTS = {
    a.username: a
    for a in (
        Account("alice", "acct-alice-01", "Alice Anders", "alice@example.test"),
        Account("bob", "acct-bob-02", "Bob Berg", "bob@example.test"),
        Account("carol", "acct-carol-03", "Carol Cruz", "carol@example.test"),
        Account("dave", "acct-dave-04", "Dave Dahl", "dave@example.test"),
        Account("erin", "acct-erin-05", "Erin Ek", "erin@example.test"),
        Account("frank", "acct-frank-06", "Frank Falk", "frank@example.test"),
        Account("grace", "acct-grace-07", "Grace Gray", "grace@example.test"),
        Account("heidi", "acct-heidi-08", "Heidi Holm", "heidi@example.test"),
        Account("ivan", "acct-ivan-09", "Ivan Isak", "ivan@example.test"),
        Account("judy", "acct-judy-10", "Judy Juhl", "judy@example.test"),
        Account("mallory", "acct-mallory-11", "Mallory Mo", "mallory@example.test"),
    )
}


@dataclass
class NodeProvider:
    """One ``node provider.mjs`` process; the same port and store across restarts."""

    workdir: Path
    clients: list[dict[str, Any]]
    jwks: dict[str, Any]
    access_token_ttl: int
    conform_id_token_claims: bool = False
    port: int = field(default_factory=free_port)
    output: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.origin + MOUNT

    def endpoint(self, path: str) -> str:
        return self.issuer + path

    def start(self) -> NodeProvider:
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "storeFile": str(self.workdir / "store.json"),
            "jwks": self.jwks,
            "cookieKeys": ["interop-cookie-key-0123456789abcdef"],
            "accessTokenTtl": self.access_token_ttl,
            "conformIdTokenClaims": self.conform_id_token_claims,
            "clients": self.clients,
            "accounts": {name: account.as_config() for name, account in ACCOUNTS.items()},
        }
        config_file = self.workdir / "provider.json"
        config_file.write_text(json.dumps(config))
        node = shutil.which("node")
        assert node is not None
        ready = threading.Event()
        self._proc = subprocess.Popen(
            [node, str(PROVIDER_SCRIPT), str(config_file)],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "NODE_ENV": "test"},
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc, ready), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while not ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("oidc-provider did not start:\n" + "\n".join(self.output))
        return self

    def _read(self, proc: subprocess.Popen[str], ready: threading.Event) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line.rstrip())
            if line.startswith("READY "):
                ready.set()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to this PID only
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        assert proc.stdout is not None
        proc.stdout.close()

    def restart(self, jwks: dict[str, Any]) -> None:
        """Stop, then start again with ``jwks``: same port, issuer and store (grants and tokens survive)."""
        self.stop()
        self.jwks = jwks
        self.start()

    def events(self) -> list[dict[str, Any]]:
        response = httpx2.get(self.origin + "/_test/events", timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result


def bff_client(client_id: str, secret: str, bff_url: str, method: str, *, backchannel: bool = True) -> dict[str, Any]:
    client: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [f"{bff_url}/auth/callback"],
        "post_logout_redirect_uris": [f"{bff_url}/"],
        "response_types": ["code"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": method,
    }
    if backchannel:
        client["backchannel_logout_uri"] = f"{bff_url}/auth/backchannel-logout"
        client["backchannel_logout_session_required"] = True
    return client


def resource_server_client(client_id: str, secret: str) -> dict[str, Any]:
    """A client that may only introspect: what the data API authenticates with."""
    return {
        "client_id": client_id,
        "client_secret": secret,
        "redirect_uris": [],
        "response_types": [],
        "grant_types": [],
        "token_endpoint_auth_method": "client_secret_post",
    }


# -- the data API stand-in -----------------------------------------------------------------------------


@dataclass
class SeenCall:
    path: str
    token: str
    active: bool
    status: int
    introspection: dict[str, Any]


@dataclass
class DataApiState:
    introspection_endpoint: str
    client_id: str
    client_secret: str
    expected_client_id: str
    expected_client_secret: str
    calls: list[SeenCall] = field(default_factory=list)

    def since(self, mark: int) -> Sequence[SeenCall]:
        return self.calls[mark:]


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "unauthorized", "message": "Invalid or missing authentication token", "details": []},
        status_code=401,
    )


def create_data_api(state: DataApiState) -> Starlette:
    http: dict[str, httpx2.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx2.AsyncClient(timeout=10) as client:
            http["idp"] = client
            yield

    async def authenticate(request: Request, scope: str) -> tuple[dict[str, Any], Response | None]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return {}, _unauthorized()
        introspected = await http["idp"].post(
            state.introspection_endpoint,
            data={"token": token, "client_id": state.client_id, "client_secret": state.client_secret},
        )
        introspected.raise_for_status()
        body: dict[str, Any] = introspected.json()
        active = body.get("active") is True
        denial: Response | None = None
        if (
            not active
            or body.get("token_type", "Bearer") != "Bearer"
            or body.get("client_id") != state.expected_client_id
            or request.headers.get("x-client-id") != state.expected_client_id
            or request.headers.get("x-client-secret") != state.expected_client_secret
        ):
            denial = _unauthorized()
        elif scope not in str(body.get("scope", "")).split():
            denial = JSONResponse({"error": "forbidden", "message": "Insufficient scopes"}, status_code=403)
        status = denial.status_code if denial is not None else 200
        state.calls.append(SeenCall(request.url.path, token, active, status, body))
        return body, denial

    async def integrations(request: Request) -> Response:
        token, denial = await authenticate(request, "integrations:read")
        if denial is not None:
            return denial
        item = {"walletId": "w-1", "name": "Interop Wallet", "provider": "interop"}
        body = {
            "data": [item],
            "pagination": {"page": 1, "pageSize": 25, "totalCount": 1, "hasNextPage": False, "hasPreviousPage": False},
            "user_id": token["sub"],
        }
        return JSONResponse(body)

    async def userinfo(request: Request) -> Response:
        token, denial = await authenticate(request, "users:read")
        if denial is not None:
            return denial
        return JSONResponse({"message": "User info retrieved successfully", "userInfo": {"sub": token["sub"]}})

    return Starlette(
        routes=[
            Route("/api/v1/integrations", integrations, methods=["GET"]),
            Route("/api/v1/userinfo", userinfo, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
