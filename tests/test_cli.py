"""The commands as a person runs them: real subprocesses on loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest

from bff_dev.emulator import EmulatorClient, EmulatorConfig, create_emulator_app
from tests.support.processes import child_env, start_cluster
from tests.support.redis_server import free_port
from tests.support.servers import ServerThread

BFF = [sys.executable, "-m", "bff"]


def _wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 20) -> httpx2.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, _output(proc)
        try:
            r = httpx2.get(url, timeout=1)
            if r.status_code == 200:
                return r
        except httpx2.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout} s")


@contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    # Output goes to a file, not a pipe: a chatty server must never block on a full pipe.
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(args, env=child_env(env), stdout=out, stderr=subprocess.STDOUT, text=True)
        proc.output = out  # type: ignore[attr-defined]
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _output(proc: subprocess.Popen[str]) -> str:
    out = proc.output  # type: ignore[attr-defined]
    out.seek(0)
    return str(out.read())


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_starts_answers_and_stops_on_sigterm(redis_url: str, workers: int) -> None:
    port, metrics_port = free_port(), free_port()
    secret = secrets.token_urlsafe(24)
    emulator_port = free_port()
    emulator = ServerThread(
        create_emulator_app(
            EmulatorConfig(
                base_url=f"http://127.0.0.1:{emulator_port}",
                clients=[EmulatorClient("serve-test", secret, [f"http://127.0.0.1:{port}/auth/callback"])],
            )
        ),
        port=emulator_port,
    ).start()
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin"),
            "BFF_ISSUER": f"{emulator.url}/oidc",
            "BFF_CLIENT_ID": "serve-test",
            "BFF_CLIENT_SECRET": secret,
            "BFF_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "BFF_REDIS_URL": redis_url,
            "BFF_SESSION_SECRETS": secrets.token_urlsafe(32),
            "BFF_ENCRYPTION_KEYS": secrets.token_urlsafe(32),
            "BFF_METRICS_PORT": str(metrics_port),
            "BFF_REDIS_UR": "a typo: warned about, by name only",
        }
        args = [*BFF, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        with _process(args, env) as proc:
            assert _wait_ready(f"http://127.0.0.1:{port}/readyz", proc).json()["status"] == "ready"
            for _ in range(4):
                assert httpx2.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
            # Metrics on their own port only (never through the ingress), aggregated over the workers.
            assert httpx2.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
            exposition = httpx2.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            healthz = [
                line
                for line in exposition.splitlines()
                if line.startswith("bff_http_requests_total{") and 'route="/healthz"' in line
            ]
            assert healthz, exposition[:2000]
            assert sum(float(line.rsplit(" ", 1)[1]) for line in healthz) >= 4
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says why (143).
            assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
            logs = _output(proc)
        assert "Application shutdown complete" in logs
        assert secret not in logs
        [typo] = [json.loads(line) for line in logs.splitlines() if "not bff settings" in line]
        assert (typo["level"], typo["hint"]) == ("warning", "BFF_REDIS_UR (did you mean BFF_REDIS_URL?)")
        assert "a typo" not in logs
        assert '"level": "info"' in logs  # JSON logs by default
        # Access lines (written without LogRecords in production) carry the route template and request id.
        access = [json.loads(line) for line in logs.splitlines() if '"logger": "bff.access"' in line]
        healthz_lines = [entry for entry in access if entry["route"] == "/healthz"]
        assert len(healthz_lines) >= 4
        assert all(len(entry["request_id"]) == 16 and entry["status"] == 200 for entry in healthz_lines)
    finally:
        emulator.stop()


def test_serve_refuses_memory_store_with_several_workers() -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "BFF_CLIENT_ID": "c",
        "BFF_CLIENT_SECRET": "s",
        "BFF_PUBLIC_URL": "https://app.example.com",
        "BFF_REDIS_URL": "memory://",
        "BFF_SESSION_SECRETS": "a" * 32,
        "BFF_ENCRYPTION_KEYS": "b" * 32,
    }
    result = subprocess.run(
        [*BFF, "serve", "--workers", "2"], env=child_env(env), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert "memory://" in result.stderr


def test_serve_refuses_to_start_with_bad_settings() -> None:
    result = subprocess.run(
        [*BFF, "serve"], env=child_env({"PATH": "/usr/bin"}), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert "BFF_CLIENT_ID" in result.stderr


async def test_dev_serves_the_demo_and_a_person_can_sign_in() -> None:
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin")}
    with _process([*BFF, "dev", "--port", str(port)], env) as proc:
        base = f"http://localhost:{port}"
        _wait_ready(f"{base}/readyz", proc)
        page = httpx2.get(base + "/")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        async with httpx2.AsyncClient(follow_redirects=True, timeout=10) as client:
            # As the browser would: login → the emulator's page (login_hint picks the user) → back to /.
            r = await client.get(f"{base}/auth/login", params={"login_hint": "admin"})
            assert r.status_code == 200
            assert str(r.url) == base + "/"
            me = await client.get(f"{base}/auth/session", headers={"X-CSRF": "1"})
            assert me.status_code == 200
            assert me.json()["is_admin"] is True
            grants = await client.get(f"{base}/api/developer/grants", headers={"X-CSRF": "1"})
            assert grants.status_code == 200


def test_serve_refuses_a_redis_url_it_cannot_read_without_echoing_it() -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin"),
        "BFF_CLIENT_ID": "c",
        "BFF_CLIENT_SECRET": "s",
        "BFF_PUBLIC_URL": "https://app.example.com",
        "BFF_REDIS_URL": "redis://:Sx7Q/Wv3K@redis:6379/0",  # a raw '/' in the password
        "BFF_SESSION_SECRETS": "a" * 32,
        "BFF_ENCRYPTION_KEYS": "b" * 32,
    }
    result = subprocess.run(
        [*BFF, "serve"], env=child_env(env), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert "BFF_REDIS_URL" in result.stderr and "percent-encode" in result.stderr
    assert "Sx7Q" not in result.stderr + result.stdout and "Wv3K" not in result.stderr + result.stdout


_FAILING_START_UP = """
import contextlib, sys, uvicorn
from starlette.applications import Starlette
from bff import cli
from bff.logs import configure_logging

@contextlib.asynccontextmanager
async def lifespan(app):
    raise ValueError("cannot reach redis://:Sx7Q-Wv3K@redis:6379/0")
    yield

configure_logging("info", sys.argv[1])
cli._withhold_traceback_text()
uvicorn.run(Starlette(lifespan=lifespan), host="127.0.0.1", port=int(sys.argv[2]), log_config=None, lifespan="on")
"""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_failed_start_up_logs_the_exception_type_not_its_message(log_format: str) -> None:
    # Starlette hands uvicorn the formatted traceback (lifespan.startup.failed), which uvicorn logs as is.
    result = subprocess.run(
        [sys.executable, "-c", _FAILING_START_UP, log_format, str(free_port())],
        env=child_env({"PATH": os.environ.get("PATH", "/usr/bin")}),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "start-up failed with ValueError" in output, output
    assert "Sx7Q" not in output and "Traceback" not in output


def test_exceptions_formatted_into_uvicorn_messages_keep_only_their_type() -> None:
    import logging

    from bff.cli import _WithholdTracebackText

    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        "",
        0,
        "Error loading ASGI app factory: %s",
        (TypeError("redis://:Sx7Q@h"),),
        None,
    )
    assert _WithholdTracebackText().filter(record)
    assert record.getMessage() == "Error loading ASGI app factory: TypeError"


@pytest.mark.parametrize("command", ["serve", "check-config", "dev", "emulator"])
def test_help_describes_the_command_and_every_option_with_its_default(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from bff.cli import build_parser, main

    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping: argparse may break lines at hyphens
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    [subparsers] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser = subparsers.choices[command]
    assert parser.description and " ".join(parser.description.split()) in out
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    for action in options:
        assert action.help, f"{command} {action.option_strings[0]} has no help text"
        assert f"{action.option_strings[0]} {action.metavar or action.dest.upper()}" in out
        if action.default is None or action.default == []:
            assert action.help in out
            assert "(default: None)" not in out and "(default: [])" not in out
        else:
            assert f"{action.help} (default: {action.default})" in out
    expected = {
        "serve": ["--host HOST", "(default: 0.0.0.0)", "(default: 8000)", "(default: 1)"],
        "check-config": ["Connects to nothing"],
        "dev": ["(default: 8000)"],
        "emulator": ["(default: 127.0.0.1)", "(default: 9000)", "(default: bff-dev)", "(default: 86400)"],
    }[command]
    for text in expected:
        assert text in out
    assert len(options) == {"serve": 3, "check-config": 0, "dev": 1, "emulator": 8}[command]


def test_main_help_lists_every_command(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bff.cli import main

    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("serve", "dev", "emulator", "check-config"):
        assert command in out


# --- graceful shutdown of `bff serve`: in-flight requests finish, new ones are refused, the process exits --


async def test_sigterm_lets_in_flight_requests_finish(redis_url: str) -> None:
    cluster = start_cluster(redis_url, replicas=1)
    try:
        [replica] = cluster.replicas
        async with httpx2.AsyncClient(timeout=20) as client:
            start = await client.get(f"{replica.url}/auth/login", params={"login_hint": "guest"})
            approve = await client.get(start.headers["location"])
            await client.get(f"{replica.url}/auth/callback?{urlsplit(approve.headers['location']).query}")
            await cluster.control("POST", "config", json={"data_api_failure": {"delay_seconds": 1.5, "count": 1}})
            in_flight = asyncio.create_task(client.get(f"{replica.url}/api/v1/integrations", headers={"X-CSRF": "1"}))
            for _ in range(100):  # until the upstream has the request
                if (await cluster.control("GET", "stats"))["data_api"] >= 1:
                    break
                await asyncio.sleep(0.02)
            replica.proc.send_signal(signal.SIGTERM)
            response = await in_flight
            assert response.status_code == 200
            assert response.json()["data"]
            with pytest.raises(httpx2.HTTPError):
                await client.get(f"{replica.url}/healthz")
        # Exited by itself after draining (uvicorn re-raises SIGTERM once shut down: status 143).
        assert await asyncio.to_thread(replica.proc.wait, 15) in (0, -signal.SIGTERM)
    finally:
        cluster.stop()
