"""Run an ASGI app under a real uvicorn server on a loopback port, in a background thread.

Tests then talk to it over real HTTP, as a browser or another service would.
"""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn
from starlette.applications import Starlette

from bff.cli import bind_sockets
from tests.support.redis_server import free_port


class ServerThread:
    """``extra_port``: a second port the same server listens on (as ``bff serve`` does for BFF_VERIFY_PORT)."""

    def __init__(self, app: Starlette, port: int | None = None, *, extra_port: int = 0) -> None:
        self.app = app
        self.port = port or free_port()
        self.extra_port = extra_port
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            lifespan="on",
            loop="asyncio",
            # As `bff serve` runs it: X-Forwarded-* are bff's to judge (bff.web.forwarded), not uvicorn's,
            # whose default believes them from 127.0.0.1, the address every test connects from.
            proxy_headers=False,
            http="httptools",
            timeout_graceful_shutdown=2,
            access_log=False,
        )
        self.server = uvicorn.Server(config)  # off the main thread, uvicorn leaves signal handlers alone
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        try:
            sockets = bind_sockets(self.server.config, self.extra_port) if self.extra_port else None
            asyncio.run(self.server.serve(sockets))
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"server on port {self.port} failed to start") from self.error
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.request_stop()
        self.join()

    def request_stop(self) -> None:
        """Ask the server to shut down (it notices within 0.1 s, then takes ~0.1 s more): see :func:`stop_all`."""
        self.server.should_exit = True

    def join(self) -> None:
        self.thread.join(timeout=10)


def stop_all(servers: list[ServerThread]) -> None:
    """Stop several servers at once: each shutdown is mostly uvicorn's own waiting, so they overlap."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.join()
