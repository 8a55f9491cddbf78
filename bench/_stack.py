"""The processes under test: Redis, the upstream, the Kryptos emulator, ``bff serve`` and (if any) nginx.

The emulator is the BFF's OpenID provider so that ``/readyz`` is real (metadata loaded, Redis answering);
it is idle during the load runs. The BFF's data API is the fixed upstream of :mod:`bench.upstream`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bench._procs import Processes, Server
from bff.config import Settings, load_settings
from tests.support.redis_server import free_port, redis_server_args

CLIENT_ID = "bench"
_STARTUP_TIMEOUT = 30.0


@dataclass
class Stack:
    redis: Server
    upstream: Server
    emulator: Server
    bffs: dict[str, Server]  # by log level: "warning" always, "info" when measured
    nginx: Server | None
    settings: Settings
    redis_url: str
    bff_env: dict[str, str]

    @property
    def bff(self) -> Server:
        return self.bffs["warning"]


def _nginx_conf(tmp: Path, port: int, upstream_port: int) -> Path:
    conf = tmp / "nginx.conf"
    temp = tmp / "nginx-temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)  # workers run as nobody when started by root
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return conf


def _bff_env(
    port: int, emulator_port: int, upstream_port: int, redis_url: str, client_secret: str, level: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    env.update(
        {
            "BFF_CLIENT_ID": CLIENT_ID,
            "BFF_CLIENT_SECRET": client_secret,
            "BFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BFF_ISSUER": f"http://127.0.0.1:{emulator_port}/oidc",
            "BFF_DATA_API_URL": f"http://127.0.0.1:{upstream_port}",
            "BFF_CONNECT_API_URL": f"http://127.0.0.1:{emulator_port}/connect",
            "BFF_REDIS_URL": redis_url,
            "BFF_SESSION_SECRETS": "bench-session-secret-" + "s" * 32,
            "BFF_ENCRYPTION_KEYS": "bench-encryption-key-" + "k" * 32,
            # Metrics are recorded per request whatever the port; a real port also runs their server thread.
            "BFF_METRICS_PORT": str(free_port()),
            "BFF_LOG_LEVEL": level,
            "BFF_LOG_FORMAT": "json",
        }
    )
    return env


def start_stack(procs: Processes, tmp: Path, *, info_log: bool, nginx: str | None) -> Stack:
    python = sys.executable
    redis_port = free_port()
    redis = procs.start(
        Server(
            "redis",
            redis_server_args(redis_port, str(tmp)),
            redis_port,
            tmp / "redis.log",
        )
    )
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    upstream_port = free_port()
    upstream = procs.start(
        Server(
            "upstream", [python, "-m", "bench.upstream", "--port", str(upstream_port)], upstream_port, tmp / "up.log"
        )
    )
    emulator_port = free_port()
    client_secret = secrets.token_urlsafe(24)
    levels = ["warning", "info"] if info_log else ["warning"]
    bff_ports = {level: free_port() for level in levels}
    emulator_args = [python, "-m", "bff", "emulator", "--host", "127.0.0.1", "--port", str(emulator_port)]
    emulator_args += ["--client-id", CLIENT_ID]
    for port in bff_ports.values():
        emulator_args += ["--redirect-uri", f"http://127.0.0.1:{port}/auth/callback"]
    emulator = procs.start(
        Server(
            "emulator",
            emulator_args,
            emulator_port,
            tmp / "emulator.log",
            env={**os.environ, "BFF_EMULATOR_CLIENT_SECRET": client_secret},
        )
    )
    bffs: dict[str, Server] = {}
    envs: dict[str, dict[str, str]] = {}
    for level, port in bff_ports.items():
        envs[level] = _bff_env(port, emulator_port, upstream_port, redis_url, client_secret, level)
        args = [python, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        bffs[level] = Server(f"bff ({level})", args, port, tmp / f"bff-{level}.log", env=envs[level])
    nginx_server = None
    if nginx:
        nginx_port = free_port()
        conf = _nginx_conf(tmp, nginx_port, upstream_port)
        nginx_args = [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
        nginx_server = Server("nginx", nginx_args, nginx_port, tmp / "nginx.log")

    redis.wait_tcp(timeout=_STARTUP_TIMEOUT)
    upstream.wait_http("/healthz", timeout=_STARTUP_TIMEOUT)
    emulator.wait_http("/oidc/.well-known/openid-configuration", timeout=_STARTUP_TIMEOUT)
    for server in bffs.values():
        procs.start(server)
    for server in bffs.values():
        server.wait_http("/readyz", timeout=_STARTUP_TIMEOUT)
    if nginx_server is not None:
        procs.start(nginx_server)
        nginx_server.wait_http("/healthz", timeout=_STARTUP_TIMEOUT)
    settings = load_settings(envs["warning"])
    return Stack(redis, upstream, emulator, bffs, nginx_server, settings, redis_url, envs["warning"])


def find_nginx(explicit: str | None) -> str | None:
    return explicit or shutil.which("nginx")
