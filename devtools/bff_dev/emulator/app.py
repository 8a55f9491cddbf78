"""`create_emulator_app`: one Starlette app serving the emulated Kryptos provider, data and Connect APIs.

Works standalone (uvicorn at `base_url`) or mounted (`Mount("/_kryptos", app=...)`): routes match paths
relative to the mount, and every absolute URL is built from `config.base_url`, never from `Host`.
"""

from __future__ import annotations

import re

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bff_dev.emulator import connect_api, control, data_api, oidc, widget
from bff_dev.emulator.config import EmulatorConfig
from bff_dev.emulator.pages import logo_svg
from bff_dev.emulator.state import ROOT_PATH_KEY, EmulatorState

_PROVIDER = re.compile(r"^[a-z0-9_-]{1,40}$")


class _RememberRoot:
    """Pure ASGI: note where the emulator is mounted, before nested Mounts extend `root_path`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, ROOT_PATH_KEY: scope.get("root_path", "")}
        await self.app(scope, receive, send)


async def _logo(request: Request) -> Response:
    provider = request.path_params["provider"]
    if not _PROVIDER.match(provider):
        return Response(status_code=404)
    return Response(logo_svg(provider), media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


async def _index(request: Request) -> Response:
    state: EmulatorState = request.app.state.emulator
    config = state.config
    return JSONResponse(
        {
            "service": "kryptos-emulator",
            "issuer": config.issuer,
            "discovery": config.issuer + "/.well-known/openid-configuration",
            "data_api": config.data_api_url,
            "connect_api": config.connect_api_url,
            "control": config.base_url + "/_emulator",
            "users": [
                {"username": u.username, "sub": u.sub, "name": u.name, "account_type": u.account_type}
                for u in config.users
            ],
        }
    )


def create_emulator_app(config: EmulatorConfig, *, http_client: httpx2.AsyncClient | None = None) -> Starlette:
    """Build the emulator; `http_client` (optional) carries back-channel logout deliveries."""
    app = Starlette(
        routes=[
            Route("/", _index, methods=["GET"]),
            Mount("/oidc", routes=oidc.routes),
            Mount("/api", routes=data_api.routes),
            Mount("/connect", routes=[*widget.routes, *connect_api.routes]),
            Mount("/_emulator", routes=control.routes),
            Route("/logos/{provider}.svg", _logo, methods=["GET"]),
        ],
        middleware=[Middleware(_RememberRoot)],
    )
    app.state.emulator = EmulatorState(config, http_client=http_client)
    return app
