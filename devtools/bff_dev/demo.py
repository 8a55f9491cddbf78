"""``bff dev``: the Kryptos emulator, the BFF and the demo SPA in one process on one origin.

The emulator is mounted at ``/_kryptos`` and the BFF reaches it over real HTTP like any provider, so the
demo exercises exactly the code ``bff serve`` runs. Secrets are generated per run (the client secret may be
given as ``BFF_EMULATOR_CLIENT_SECRET``, as for ``bff emulator``: the browser tests do, to look for it in
what the page receives); nothing is read from a Kryptos account. Never used by ``bff serve``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bff.app import create_app
from bff.config import Settings, load_settings
from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app
from bff_dev.openapi import build_document

STATIC_DIR = Path(__file__).parent / "static"
EMULATOR_MOUNT = "/_kryptos"
DEV_CLIENT_ID = "bff-dev"
DEV_ADMIN_SUBJECT = "user_admin_ada"  # the emulator's seeded admin user
SPA_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


def dev_settings(port: int, environ: Mapping[str, str]) -> tuple[Settings, EmulatorConfig]:
    public_url = f"http://localhost:{port}"
    base = public_url + EMULATOR_MOUNT
    client_secret = environ.get("BFF_EMULATOR_CLIENT_SECRET") or secrets.token_urlsafe(32)
    env = {
        "BFF_PUBLIC_URL": public_url,
        "BFF_CLIENT_ID": DEV_CLIENT_ID,
        "BFF_CLIENT_SECRET": client_secret,
        "BFF_ISSUER": base + "/oidc",
        "BFF_DATA_API_URL": base + "/api",
        "BFF_CONNECT_API_URL": base + "/connect",
        "BFF_ADMIN_SUBJECTS": DEV_ADMIN_SUBJECT,
        "BFF_REDIS_URL": "memory://",
        "BFF_METRICS_PORT": "0",
        "BFF_LOG_FORMAT": "text",
    }
    # The person running the demo may still override anything that is not the emulator's wiring.
    env.update({k: v for k, v in environ.items() if k.startswith("BFF_") and k not in env})
    settings = load_settings(env, dev=True)
    emulator = EmulatorConfig(
        base_url=base,
        clients=[
            EmulatorClient(
                client_id=DEV_CLIENT_ID,
                client_secret=client_secret,
                redirect_uris=[settings.redirect_uri],
                post_logout_redirect_uris=[settings.effective_post_logout_redirect_uri],
                backchannel_logout_uri=f"{public_url}/auth/backchannel-logout",
            )
        ],
    )
    return settings, emulator


async def _index(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "index.html", headers={"Content-Security-Policy": SPA_CSP, "Cache-Control": "no-cache"}
    )


async def _openapi(request: Request) -> Response:
    return JSONResponse(build_document(), headers={"Cache-Control": "no-cache"})


def spa_routes() -> list[Route | Mount]:
    return [
        Route("/", _index, methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),  # dev only: `bff serve` does not describe itself
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_dev_app(port: int, environ: Mapping[str, str]) -> tuple[Starlette, Settings]:
    settings, emulator = dev_settings(port, environ)
    app = create_app(
        settings,
        extra_routes=[*spa_routes(), Mount(EMULATOR_MOUNT, app=create_emulator_app(emulator))],
    )
    return app, settings
