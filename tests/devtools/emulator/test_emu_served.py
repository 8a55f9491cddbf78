"""The emulator served by uvicorn on loopback, with a real back-channel delivery over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx2
import uvicorn
from starlette.types import ASGIApp

from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app

from .conftest import Receiver, jwt_claims


def _bound_socket() -> socket.socket:
    # Binding before the server starts means the port is known and connections wait in the backlog until
    # uvicorn accepts them, so the test needs no polling for readiness.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@asynccontextmanager
async def _serve(app_for: Callable[[str], ASGIApp]) -> AsyncIterator[str]:
    sock = _bound_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app_for(base), lifespan="off", log_level="warning", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield base
    finally:
        server.should_exit = True
        await task
        sock.close()


async def test_served_flow_with_real_backchannel_delivery() -> None:
    receiver = Receiver()
    async with _serve(lambda _base: receiver.app) as rp_base:
        redirect_uri = "http://127.0.0.1:1/cb"
        client = EmulatorClient(
            "served", "served-secret", [redirect_uri], backchannel_logout_uri=rp_base + "/backchannel"
        )
        emulator = _serve(lambda base: create_emulator_app(EmulatorConfig(base, [client])))
        async with emulator as base, httpx2.AsyncClient(base_url=base, timeout=10) as http:
            doc = (await http.get("/oidc/.well-known/openid_configuration")).json()
            assert doc["issuer"] == base + "/oidc"
            issued = (await http.post("/_emulator/issue-tokens", json={"username": "guest"})).json()
            sid = jwt_claims(issued["id_token"])["sid"]
            response = await http.get("/oidc/session/end", params={"id_token_hint": issued["id_token"]})
            assert response.status_code == 200
            deliveries = (await http.get("/_emulator/deliveries")).json()["deliveries"]
    assert [(d["status"], d["sid"]) for d in deliveries] == [(200, sid)]
    [received] = receiver.received
    claims = jwt_claims(received["logout_token"])
    assert claims["aud"] == "served" and claims["sid"] == sid and claims["sub"] == "anon_7f3a9c21"
