"""Driving load: ``wrk`` with ``rotate.lua`` when installed, else ``bench/loadgen.py``; one result type.

Each run is a child process with a hard timeout; its CPU time comes from ``RUSAGE_CHILDREN`` (the only
child reaped while it runs), so the report can say how much of the machine the load generator itself took.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int
    loadgen_cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def _run(args: list[str], env: dict[str, str], *, timeout: float) -> tuple[str, str, int]:
    """Run the load generator; SIGINT it when it reports that its response limit was reached, kill it
    when it overruns ``timeout``."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=BENCH_DIR.parent
    )
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("BENCHLIMIT"):
                proc.send_signal(signal.SIGINT)  # wrk prints its summary and exits
        stderr = proc.stderr.read()
        returncode = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if returncode == -signal.SIGKILL:
        raise subprocess.TimeoutExpired(args, timeout)
    return "".join(lines), stderr, returncode


class LoadGenerator:
    def __init__(self, kind: str, threads: int = 1) -> None:
        if kind == "auto":
            kind = "wrk" if shutil.which("wrk") else "python"
        if kind == "wrk" and not shutil.which("wrk"):
            raise RuntimeError("wrk is not installed (apt-get install wrk), or use --loadgen python")
        self.kind = kind
        self.threads = threads

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
            first = (version.stdout or version.stderr).strip().splitlines()
            return f"{first[0] if first else 'wrk'} (-t{self.threads}, rotate.lua)"
        return "bench/loadgen.py (Python asyncio, one process; wrk not installed)"

    def run(
        self,
        port: int,
        path: str,
        *,
        connections: int,
        duration: float,
        cookies: Path | None,
        limit: int = 0,
        threads: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> LoadResult:
        extra = [f"{name}: {value}" for name, value in headers]
        if self.kind == "wrk":
            args = [
                "wrk",
                f"-t{min(threads or self.threads, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "-s",
                str(BENCH_DIR / "rotate.lua"),
                f"http://127.0.0.1:{port}{path}",
                "--",
                str(cookies or os.devnull),
                path,
                str(limit),
                *extra,
            ]
        else:
            args = [
                sys.executable,
                "-m",
                "bench.loadgen",
                f"--port={port}",
                f"--path={path}",
                f"--connections={connections}",
                f"--duration={duration}",
                f"--limit={limit}",
            ]
            if cookies is not None:
                args.append(f"--cookies={cookies}")
            args += [f"--header={header}" for header in extra]
        env = dict(os.environ)
        if limit:
            env["BENCH_WRK_LIMIT"] = "1"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout, stderr, returncode = _run(args, env, timeout=duration + 30)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next((x for x in stdout.splitlines() if x.startswith("BENCHJSON ")), None)
        if returncode != 0 or line is None:
            raise RuntimeError(f"{args[0]} failed ({returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}")
        raw = json.loads(line.removeprefix("BENCHJSON "))
        return LoadResult(
            requests=int(raw["requests"]),
            duration_s=raw["duration_us"] / 1e6,
            p50_ms=raw["p50_us"] / 1000,
            p90_ms=raw["p90_us"] / 1000,
            p99_ms=raw["p99_us"] / 1000,
            max_ms=raw["max_us"] / 1000,
            non2xx=int(raw["status"]),
            socket_errors=int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
            loadgen_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        )
