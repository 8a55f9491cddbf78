"""The processes under test: Redis, the upstream, the Kryptos emulator, ``bff serve``, and the peers: the Node
BFF (:mod:`bench._node`, when node and npm are installed) and nginx (when installed).

The emulator is the BFF's OpenID provider so that ``/readyz`` is real (metadata loaded, Redis answering);
it is idle during the load runs. The BFF's data API is the fixed upstream of :mod:`bench.upstream`; the Node
BFF proxies to the same upstream and keeps its sessions in the same Redis.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import _node
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
    # nginx's other listeners, in front of the bff at log level warning: "bff" (proxy_pass to bff, which
    # proxies) and "ext-authz" (auth_request to bff's /auth/verify, then proxy_pass to the upstream itself)
    nginx_ports: dict[str, int] = field(default_factory=dict)
    bff_workers: Server | None = None  # `bff serve --workers 2` at log level warning, when asked for
    node: Server | None = None  # the Node BFF peer, unless skipped
    node_secret: str = ""  # its express-session secret (signs the `sid` cookies)
    node_skipped: str | None = None  # why the Node BFF is not running, when asked for and it is not

    @property
    def bff(self) -> Server:
        return self.bffs["warning"]


def _nginx_conf(tmp: Path, port: int, upstream_port: int, bff_port: int, bff_proxy_port: int, ext_port: int) -> Path:
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
    upstream bff {{
        server 127.0.0.1:{bff_port};
        keepalive 64;
    }}
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
        }}
    }}
    # nginx in front of bff's proxy (how bff is usually deployed): the API bytes pass through both.
    server {{
        listen 127.0.0.1:{bff_proxy_port};
        location / {{
            proxy_pass http://bff;
        }}
    }}
    # External authorization, as tests/ingress/nginx.conf.template and the README configure it: nginx asks
    # bff's /auth/verify, copies its answer onto the request and proxies the call to the upstream itself.
    server {{
        listen 127.0.0.1:{ext_port};
        location /api/ {{
            auth_request /_bff_verify;
            auth_request_set $bff_authorization $upstream_http_authorization;
            auth_request_set $bff_client_id $upstream_http_x_client_id;
            auth_request_set $bff_client_secret $upstream_http_x_client_secret;
            proxy_set_header Connection "";
            proxy_set_header Authorization $bff_authorization;
            proxy_set_header X-Client-Id $bff_client_id;
            proxy_set_header X-Client-Secret $bff_client_secret;
            proxy_set_header Cookie "";
            proxy_hide_header Set-Cookie;
            location /api/v1/ {{
                proxy_pass http://app/v1/;
            }}
        }}
        location = /_bff_verify {{
            internal;
            proxy_pass http://bff/auth/verify;
            proxy_pass_request_body off;
            proxy_set_header Connection "";
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }}
    }}
}}
"""
    )
    return conf


def bff_env(
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
            # /auth/verify answers only trusted peers: the load generator and nginx, both on loopback.
            "BFF_TRUSTED_PROXIES": "127.0.0.1/32",
        }
    )
    return env


def _node_problem() -> str | None:
    """Why the Node BFF cannot run here (node or npm missing, or ``npm ci`` failed), else None."""
    reason = _node.unavailable()
    if reason is not None:
        return reason
    try:
        _node.install()
    except RuntimeError as err:
        return str(err)
    return None


def start_stack(
    procs: Processes,
    tmp: Path,
    *,
    info_log: bool,
    nginx: str | None,
    workers2: bool = False,
    node: bool = False,
) -> Stack:
    """Start every process (the bff at log level warning always; at info, with 2 workers, the Node BFF and
    nginx when asked for) and wait until each answers."""
    node_skipped = _node_problem() if node else None
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
    workers_port = free_port() if workers2 else 0
    emulator_args = [python, "-m", "bff", "emulator", "--host", "127.0.0.1", "--port", str(emulator_port)]
    emulator_args += ["--client-id", CLIENT_ID]
    for port in [*bff_ports.values(), *([workers_port] if workers_port else [])]:
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
        envs[level] = bff_env(port, emulator_port, upstream_port, redis_url, client_secret, level)
        args = [python, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        bffs[level] = Server(f"bff ({level})", args, port, tmp / f"bff-{level}.log", env=envs[level])
    bff_workers = None
    if workers_port:
        env = bff_env(workers_port, emulator_port, upstream_port, redis_url, client_secret, "warning")
        args = [python, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(workers_port), "--workers", "2"]
        bff_workers = Server("bff (2 workers)", args, workers_port, tmp / "bff-workers.log", env=env)
    node_secret = secrets.token_urlsafe(32)
    node_server = None
    if node and node_skipped is None:
        node_port = free_port()
        node_server = _node.server(
            node_port,
            redis_url,
            upstream_port,
            tmp / "node.log",
            secret=node_secret,
            client_id=CLIENT_ID,
            client_secret=client_secret,
        )
    nginx_server = None
    nginx_ports: dict[str, int] = {}
    if nginx:
        nginx_port = free_port()
        nginx_ports = {"bff": free_port(), "ext-authz": free_port()}
        conf = _nginx_conf(
            tmp, nginx_port, upstream_port, bff_ports["warning"], nginx_ports["bff"], nginx_ports["ext-authz"]
        )
        nginx_args = [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
        nginx_server = Server("nginx", nginx_args, nginx_port, tmp / "nginx.log")

    redis.wait_tcp(timeout=_STARTUP_TIMEOUT)
    upstream.wait_http("/healthz", timeout=_STARTUP_TIMEOUT)
    emulator.wait_http("/oidc/.well-known/openid-configuration", timeout=_STARTUP_TIMEOUT)
    every_bff = [*bffs.values(), *([bff_workers] if bff_workers else [])]
    for server in every_bff:
        procs.start(server)
    if node_server is not None:
        procs.start(node_server)
    for server in every_bff:
        server.wait_http("/readyz", timeout=_STARTUP_TIMEOUT)
    if node_server is not None:
        try:
            node_server.wait_http("/healthz", timeout=_STARTUP_TIMEOUT)
        except RuntimeError as err:  # a peer that does not start is reported, not fatal
            node_server.stop()
            node_server, node_skipped = None, f"the Node BFF did not start: {err}"
    if nginx_server is not None:
        procs.start(nginx_server)
        nginx_server.wait_http("/healthz", timeout=_STARTUP_TIMEOUT)
    settings = load_settings(envs["warning"])
    return Stack(
        redis,
        upstream,
        emulator,
        bffs,
        nginx_server,
        settings,
        redis_url,
        envs["warning"],
        nginx_ports,
        bff_workers=bff_workers,
        node=node_server,
        node_secret=node_secret,
        node_skipped=node_skipped,
    )


def find_nginx(explicit: str | None) -> str | None:
    return explicit or shutil.which("nginx")
