"""The benchmark's processes: start on free loopback ports, wait with timeouts, stop for certain, read /proc.

Every server is started in its own session (so a terminal's Ctrl-C reaches only the benchmark, which then
stops them in order) and registered with a :class:`Processes` that stops them all on exit: SIGTERM, a
grace period, then SIGKILL, for the process and every descendant it had.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def _ticks(pid: int) -> int:
    """utime + stime (+ cutime + cstime of reaped children) of one process, in clock ticks; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14-17 of proc(5), counted after the command name: utime, stime, cutime, cstime.
    return sum(int(v) for v in fields[11:15])


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants (uvicorn workers, nginx workers), in seconds."""
    return sum(_ticks(p) for p in (pid, *descendants(pid))) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time all processes on the machine spent busy (every core summed, idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of one process, in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


@dataclass
class Server:
    name: str
    args: Sequence[str]
    port: int
    log: Path
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> Server:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                list(self.args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.name} exited (code {self.proc and self.proc.returncode}); log tail:\n{tail}")

    def wait_http(self, path: str, *, timeout: float, status: int = 200) -> None:
        """Poll ``GET path`` until it answers ``status``; raise with the log tail when it does not in time."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1.0)
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status == status:
                    return
                last = f"HTTP {response.status}"
            except OSError as exc:
                last = type(exc).__name__
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: GET {path} did not answer {status} within {timeout:.0f} s ({last})")

    def wait_tcp(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name}: port {self.port} not open within {timeout:.0f} s")

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        family = descendants(proc.pid) if proc.poll() is None else []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        for pid in family:  # workers a killed master left behind; they were started by us
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None


class Processes:
    """Every server the benchmark started, stopped in reverse order on exit, whatever the exit."""

    def __init__(self) -> None:
        self._servers: list[Server] = []

    def start(self, server: Server) -> Server:
        self._servers.append(server)
        return server.start()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Ctrl-C during shutdown must not leave the rest running.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            for server in reversed(self._servers):
                try:
                    server.stop()
                except Exception as err:  # keep stopping the others
                    print(f"warning: stopping {server.name}: {err}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
