"""Run ``bff serve`` as separate OS processes (replicas) sharing one Redis and one emulator."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

import httpx2
from starlette.applications import Starlette

from bff.sessions import SessionManager
from bff.sessions.cookie import SignedValueCodec
from bff.sessions.crypto import Keyring
from bff.sessions.model import Lifetimes
from bff.sessions.redis_store import RedisStore
from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app
from tests.support.redis_server import free_port, stop_process
from tests.support.servers import ServerThread

CLIENT_ID = "bff-replicas"
LIFETIMES = Lifetimes(idle_timeout=1800, max_lifetime=86400, refresh_token_lifetime=30 * 86400)  # bff's defaults


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment for a ``bff`` process a test starts: ``env``, plus what coverage needs to measure that
    process too when the test command runs with ``--cov`` (``COVERAGE_PROCESS_CONFIG``; see pyproject.toml)."""
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}}


def wait_ready(url: str, proc: subprocess.Popen[Any], output: Callable[[], str], *, what: str, timeout: float) -> None:
    """Poll a started process's readiness endpoint, as an orchestrator would (a process cannot be awaited).

    Fails with the process's output when it exits first or is not ready within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{output()}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} was not ready at {url} within {timeout} s:\n{output()}")


@dataclass
class Replica:
    port: int
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    metrics_port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, timeout=15)
        self.log.close()


@dataclass
class Cluster:
    """An emulator (thread) and N ``bff serve`` processes behind one public URL's settings."""

    redis_url: str
    emulator: ServerThread
    emulator_config: EmulatorConfig
    env: dict[str, str]
    replicas: list[Replica] = field(default_factory=list)

    def start_replica(self, *, metrics: bool = False, workers: int = 1, **env: str) -> Replica:
        """One more ``bff serve`` on the shared settings; ``env`` overrides some (e.g. its own BFF_REDIS_URL)."""
        port = free_port()
        metrics_port = free_port() if metrics else 0
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Replica.stop
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bff",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=child_env({**self.env, "BFF_METRICS_PORT": str(metrics_port), **env}),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        replica = Replica(port, proc, log, metrics_port)
        self.replicas.append(replica)
        wait_ready(f"{replica.url}/readyz", proc, replica.output, what="bff serve", timeout=20)
        return replica

    async def control(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx2.AsyncClient() as c:
            r = await c.request(method, f"{self.emulator.url}/_emulator/{path}", **kwargs)
            r.raise_for_status()
            return r.json() if r.content else None

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.emulator.stop()


def start_cluster(redis_url: str, *, replicas: int = 2, metrics: bool = False, **env_overrides: str) -> Cluster:
    return start_cluster_on(create_emulator_app, redis_url, replicas=replicas, metrics=metrics, overrides=env_overrides)


def start_cluster_on(
    emulator_app: Callable[[EmulatorConfig], Starlette],
    redis_url: str,
    *,
    replicas: int,
    metrics: bool = False,
    overrides: Mapping[str, str],
) -> Cluster:
    """An emulator (``emulator_app`` builds it, e.g. with a middleware that records what it is sent) and
    ``replicas`` ``bff serve`` processes; ``overrides`` replace or add settings."""
    # Every replica serves the same public origin; tests talk to each by its own port, cookies travel by
    # header, so the public URL only has to be a registered redirect URI.
    public = "http://127.0.0.1:1"
    secret = secrets.token_urlsafe(24)
    emulator_port = free_port()
    config = EmulatorConfig(
        base_url=f"http://127.0.0.1:{emulator_port}",
        clients=[EmulatorClient(CLIENT_ID, secret, [f"{public}/auth/callback"])],
    )
    emulator = ServerThread(emulator_app(config), port=emulator_port).start()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "BFF_ISSUER": config.issuer,
        "BFF_DATA_API_URL": config.data_api_url,
        "BFF_CONNECT_API_URL": config.connect_api_url,
        "BFF_CLIENT_ID": CLIENT_ID,
        "BFF_CLIENT_SECRET": secret,
        "BFF_PUBLIC_URL": public,
        "BFF_REDIS_URL": redis_url,
        "BFF_SESSION_SECRETS": secrets.token_urlsafe(32),
        "BFF_ENCRYPTION_KEYS": secrets.token_urlsafe(32),
        "BFF_METRICS_PORT": "0",
        "BFF_LOG_LEVEL": "warning",
        **overrides,
    }
    cluster = Cluster(redis_url, emulator, config, env)
    try:
        for _ in range(replicas):
            cluster.start_replica(metrics=metrics)
    except BaseException:
        cluster.stop()
        raise
    return cluster


async def sign_in(client: httpx2.AsyncClient, replica: Replica, username: str = "guest") -> str:
    """A whole browser sign-in against one replica; returns the session cookie's value."""
    start = await client.get(f"{replica.url}/auth/login", params={"login_hint": username})
    assert start.status_code == 302, start.text
    approve = await client.get(start.headers["location"])
    query = urlsplit(approve.headers["location"]).query
    done = await client.get(f"{replica.url}/auth/callback?{query}")
    assert done.status_code == 302, done.text
    return str(client.cookies["bff-session"])


def cluster_sessions(cluster: Cluster) -> tuple[SessionManager, SignedValueCodec, RedisStore]:
    """bff's own session code on the cluster's Redis and keys, for a test to look at or change a session
    without going through HTTP; the caller closes the store."""
    store = RedisStore.from_url(cluster.redis_url)
    keyring = Keyring([cluster.env["BFF_ENCRYPTION_KEYS"]])
    manager = SessionManager(store, keyring, lifetimes=LIFETIMES, clock=time.time)
    return manager, SignedValueCodec([cluster.env["BFF_SESSION_SECRETS"]], salt="bff.session"), store


async def expire_access_token(cluster: Cluster, cookie: str) -> str:
    """Jump the session's clock: its access token is now past expiry (no sleeping)."""
    manager, codec, store = cluster_sessions(cluster)
    try:
        return await expire_with(manager, codec, cookie)
    finally:
        await store.aclose()


async def expire_with(manager: SessionManager, codec: SignedValueCodec, cookie: str) -> str:
    """Through bff's own session code: the access token of the session ``cookie`` names is now past expiry;
    returns the session id."""
    session_id = codec.unsign(cookie)
    assert session_id is not None
    session = await manager.load(session_id, cached=False)
    assert session is not None
    past = time.time() - 1
    saved = await manager.save(session_id, session.with_changes(access_expires_at=past, access_refresh_at=past))
    assert saved is not None
    return session_id
