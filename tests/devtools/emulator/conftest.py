"""Fixtures for the emulator's own tests: an emulator app, an HTTP client on it, a back-channel receiver.

Everything goes over HTTP through ASGI transports; the `emu` driver wraps the flows many tests share.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app

BASE_URL = "http://emulator.test"
CLIENT_ID = "bff-test"
CLIENT_SECRET = "s3cret with spaces&symbols"
REDIRECT_URI = "http://app.test/auth/callback"
POST_LOGOUT_URI = "http://app.test/"
BACKCHANNEL_URI = "http://rp.test/backchannel"
BASIC_CLIENT_ID = "basic-only"
BASIC_SECRET = "basic-secret"
ALL_SCOPES = (
    "openid profile offline_access email portfolios:read transactions:read integrations:read "
    "tax:read accounting:read reports:read workspace:read users:read"
)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def jwt_claims(token: str) -> dict[str, Any]:
    import json

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def jwt_header(token: str) -> dict[str, Any]:
    import json

    head = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))))


class Receiver:
    """A relying party's back-channel logout endpoint that records what it receives."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.status = 200
        self.app = Starlette(routes=[Route("/backchannel", self._endpoint, methods=["POST"])])

    async def _endpoint(self, request: Request) -> Response:
        form = await request.form()
        self.received.append({k: str(v) for k, v in form.items()} | {"_content_type": request.headers["content-type"]})
        return PlainTextResponse("", status_code=self.status)


def make_config(**overrides: Any) -> EmulatorConfig:
    clients = [
        EmulatorClient(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uris=[REDIRECT_URI],
            post_logout_redirect_uris=[POST_LOGOUT_URI],
            backchannel_logout_uri=BACKCHANNEL_URI,
        ),
        EmulatorClient(
            client_id=BASIC_CLIENT_ID,
            client_secret=BASIC_SECRET,
            redirect_uris=[REDIRECT_URI],
            token_endpoint_auth_methods=("client_secret_basic",),
        ),
    ]
    return EmulatorConfig(base_url=BASE_URL, clients=clients, **overrides)


class Driver:
    """Drives the emulator over HTTP the way a relying party would."""

    def __init__(self, http: httpx2.AsyncClient, app: Starlette, receiver: Receiver) -> None:
        self.http = http
        self.app = app
        self.receiver = receiver

    def auth_params(self, **extra: str) -> tuple[dict[str, str], str]:
        verifier, challenge = pkce_pair()
        params = {
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "response_type": "code",
            "scope": "openid profile email offline_access integrations:read users:read",
            "state": "st-123",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        params.update(extra)
        return params, verifier

    async def authorize(self, username: str = "guest", **extra: str) -> tuple[str, str]:
        """Auto-approve through `login_hint`; return (code, verifier)."""
        params, verifier = self.auth_params(login_hint=username, **extra)
        response = await self.http.get("/oidc/auth", params=params)
        assert response.status_code == 302, response.text
        location = httpx2.URL(response.headers["location"])
        return location.params["code"], verifier

    async def exchange(self, code: str, verifier: str, **extra: str) -> httpx2.Response:
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        data.update(extra)
        return await self.http.post("/oidc/token", data=data)

    async def login(self, username: str = "guest", **extra: str) -> dict[str, Any]:
        code, verifier = await self.authorize(username, **extra)
        response = await self.exchange(code, verifier)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def refresh(self, refresh_token: str) -> httpx2.Response:
        data = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        }
        return await self.http.post("/oidc/token", data=data)

    async def introspect(self, token: str) -> dict[str, Any]:
        response = await self.http.post(
            "/oidc/token/introspection", data={"token": token, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        )
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def issue(self, username: str = "guest", **extra: Any) -> dict[str, Any]:
        response = await self.http.post("/_emulator/issue-tokens", json={"username": username, **extra})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def data_headers(self, access_token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {access_token}",
            "X-Client-Id": CLIENT_ID,
            "X-Client-Secret": CLIENT_SECRET,
        }

    async def data(self, path: str, access_token: str, **params: Any) -> httpx2.Response:
        return await self.http.get("/api" + path, headers=self.data_headers(access_token), params=params)

    async def integrations(self, username: str = "guest", **params: Any) -> dict[str, Any]:
        tokens = await self.issue(username)
        response = await self.data("/v1/integrations", tokens["access_token"], **params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def connect_headers(self, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict[str, str]:
        return {"X-Client-Id": client_id, "X-Client-Secret": secret}

    async def patch_limit(self, grant_id: str, body: Any) -> httpx2.Response:
        return await self.http.patch(
            f"/connect/developer/grants/{grant_id}/transaction-limit", json=body, headers=self.connect_headers()
        )

    async def configure(self, **settings: Any) -> dict[str, Any]:
        response = await self.http.post("/_emulator/config", json=settings)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def resync(self, access_token: str, wallet_id: str) -> str:
        """Resync one integration and let the job finish (the emulator's clock moves on); its final status."""
        queued = await self.http.post(
            f"/api/v1/integrations/{wallet_id}/resync", headers=self.data_headers(access_token)
        )
        assert queued.status_code == 202, queued.text
        await self.advance_clock(1)
        job = await self.data(f"/v1/sync/{queued.json()['data']['job_id']}", access_token)
        assert job.status_code == 200, job.text
        status: str = job.json()["data"]["status"]
        return status

    async def advance_clock(self, seconds: float) -> None:
        response = await self.http.post("/_emulator/advance-clock", json={"seconds": seconds})
        assert response.status_code == 200, response.text

    # --- the Connect widget flow ----------------------------------------------------------------------

    async def connect_post(
        self, path: str, body: Any, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET
    ) -> httpx2.Response:
        return await self.http.post("/connect" + path, json=body, headers=self.connect_headers(client_id, secret))

    async def link_token(self, scopes: str = ALL_SCOPES, **extra: Any) -> dict[str, Any]:
        response = await self.connect_post("/link-token", {"scopes": scopes, **extra})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def widget_post(self, path: str, link_token: str, body: Any = None) -> httpx2.Response:
        return await self.http.post(
            "/connect/widget" + path, json={} if body is None else body, headers={"X-LINK-TOKEN": link_token}
        )

    async def widget_sign_in(self, link_token: str, email: str | None = None) -> dict[str, Any]:
        """What the widget page does: Guest login, or email login with the code it shows."""
        if email is None:
            response = await self.widget_post("/guest", link_token)
        else:
            otp = await self.widget_post("/otp/request", link_token, {"email": email})
            assert otp.status_code == 200, otp.text
            code = otp.json()["data"]["otp"]
            response = await self.widget_post("/otp/verify", link_token, {"email": email, "otp": code})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def public_token(self, email: str | None = None, scopes: str = ALL_SCOPES) -> str:
        """A new link token, a widget sign-in and consent: the public token the page posts to the app."""
        link = (await self.link_token(scopes))["link_token"]
        await self.widget_sign_in(link, email)
        response = await self.widget_post("/consent", link)
        assert response.status_code == 200, response.text
        token: str = response.json()["data"]["public_token"]
        return token

    async def connect(self, email: str | None = None, scopes: str = ALL_SCOPES) -> dict[str, Any]:
        """The whole widget flow and the exchange; returns the exchange's `data` (access_token, grant_id …)."""
        response = await self.connect_post("/token/exchange", {"public_token": await self.public_token(email, scopes)})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def config() -> EmulatorConfig:
    return make_config()


@pytest.fixture
async def emulator_app(config: EmulatorConfig, receiver: Receiver) -> AsyncIterator[Starlette]:
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=receiver.app)) as deliveries:
        yield create_emulator_app(config, http_client=deliveries)


@pytest.fixture
async def emu(emulator_app: Starlette, receiver: Receiver) -> AsyncIterator[Driver]:
    transport = httpx2.ASGITransport(app=emulator_app)
    async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield Driver(http, emulator_app, receiver)
