"""What OpenTelemetry tracing costs on the hot path: CPU µs per proxied request, tracing off vs on.

Three ``bff serve --workers 1`` processes on one Redis, upstream and provider, identical but for the
environment (:data:`MODES`): "off" has no ``OTEL_*`` variable; "on" has ``OTEL_EXPORTER_OTLP_ENDPOINT``
pointing at a local sink (a separate process that accepts OTLP/HTTP, counts the spans and discards them) with
the SDK's default batching; "on, 10 %" also samples one trace in ten. Each round measures all three, in a
rotated order (the machinery of ``bench/run``: wrk or
``bench/loadgen.py``, CPU from /proc, a quiet-machine wait), and the report gives medians of the rounds and
the difference. It also times the hooks the request path calls while tracing is off (they must cost ~nothing).

``.venv/bin/python -m bench.tracing [--quick]`` (quick: 1 round x 3 s per target; default 3 rounds x 10 s);
every process listens on a free 127.0.0.1 port and is stopped on any exit, and the run is bounded (SIGALRM).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import timeit
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis

from bench._load import LoadGenerator
from bench._measure import Quiet, Run, Target, measure, measure_rounds
from bench._procs import Processes, Server
from bench._seed import Seeder
from bench._stack import CLIENT_ID, bff_env
from bff.config import load_settings
from tests.support.redis_server import free_port, redis_server_args

API_PATH = "/api/v1/integrations?page=1&pageSize=25"

_STARTUP = 30.0


# -- the sink: `python -m bench.tracing sink --port P` ------------------------------------------------------


def _sink(port: int) -> None:
    """Accept ``POST /v1/traces``, count the spans, discard them; ``GET /count`` says how many so far."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    lock = threading.Lock()
    totals = {"requests": 0, "spans": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with lock:
                totals["requests"] += 1
                totals["spans"] += spans
            self._answer(b"", "application/x-protobuf")

        def do_GET(self) -> None:
            with lock:
                self._answer(json.dumps(totals).encode(), "application/json")

        def _answer(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def _spans_received(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/count")
    totals = json.loads(conn.getresponse().read())
    conn.close()
    return int(totals["spans"])


# -- the stack ----------------------------------------------------------------------------------------------


def _bff_env(port: int, emulator: int, upstream: int, redis_url: str, secret: str) -> dict[str, str]:
    """bench/run's settings for a bff, without any OTEL_* of this shell: each mode sets its own (MODES)."""
    env = bff_env(port, emulator, upstream, redis_url, secret, "warning")
    return {k: v for k, v in env.items() if not k.startswith("OTEL_")}


# Each bff's tracing variables. "on": every request traced, the SDK's default batching (512 spans, every 5 s at
# the latest); "on, 10 %": the same with one trace in ten sampled (the rest are cheap non-recording spans).
MODES: dict[str, dict[str, str]] = {
    "off": {},
    "on": {},
    "on, 10 %": {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
}


@dataclass
class _Stack:
    bffs: dict[str, Server]  # by mode
    sinks: dict[str, Server]  # by mode, for the modes that trace
    redis: Server
    upstream: Server
    redis_url: str
    env: dict[str, str]  # the "off" bff's environment (the settings the sessions are seeded with)


def _start(procs: Processes, tmp: Path) -> _Stack:
    """Redis, the upstream, the emulator (the provider), a sink per traced mode and a bff per mode; waits until
    all answer."""
    python = sys.executable
    redis_port, upstream_port, emulator_port = free_port(), free_port(), free_port()
    redis = procs.start(Server("redis", redis_server_args(redis_port, str(tmp)), redis_port, tmp / "redis.log"))
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    upstream_args = [python, "-m", "bench.upstream", "--port", str(upstream_port)]
    upstream = procs.start(Server("upstream", upstream_args, upstream_port, tmp / "upstream.log"))
    sinks: dict[str, Server] = {}
    for n, mode in enumerate(m for m in MODES if m != "off"):
        port = free_port()
        args = [python, "-m", "bench.tracing", "sink", "--port", str(port)]
        sinks[mode] = procs.start(Server(f"sink ({mode})", args, port, tmp / f"sink-{n}.log"))
    secret = secrets.token_urlsafe(24)
    ports = {mode: free_port() for mode in MODES}
    emulator_args = [python, "-m", "bff", "emulator", "--host", "127.0.0.1", "--port", str(emulator_port)]
    emulator_args += ["--client-id", CLIENT_ID]
    for port in ports.values():
        emulator_args += ["--redirect-uri", f"http://127.0.0.1:{port}/auth/callback"]
    emulator_env = {**os.environ, "BFF_EMULATOR_CLIENT_SECRET": secret}
    emulator = procs.start(Server("emulator", emulator_args, emulator_port, tmp / "emulator.log", env=emulator_env))
    redis.wait_tcp(timeout=_STARTUP)
    upstream.wait_http("/healthz", timeout=_STARTUP)
    for sink in sinks.values():
        sink.wait_http("/count", timeout=_STARTUP)
    emulator.wait_http("/oidc/.well-known/openid-configuration", timeout=_STARTUP)
    bffs: dict[str, Server] = {}
    envs: dict[str, dict[str, str]] = {}
    for n, (mode, port) in enumerate(ports.items()):
        env = envs[mode] = {**_bff_env(port, emulator_port, upstream_port, redis_url, secret), **MODES[mode]}
        if mode in sinks:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sinks[mode].port}"
        args = [python, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        bffs[mode] = procs.start(Server(f"bff (tracing {mode})", args, port, tmp / f"bff-{n}.log", env=env))
    for server in bffs.values():
        server.wait_http("/readyz", timeout=_STARTUP)
    return _Stack(bffs, sinks, redis, upstream, redis_url, envs["off"])


# -- the hooks while off ------------------------------------------------------------------------------------


def _hooks_off_ns() -> float:
    """Nanoseconds per request of what the request path calls into bff.tracing while tracing is off: one
    server_span, three redis_span and one http_span (a proxied call that reads its session from Redis)."""
    from bff import tracing

    assert tracing._active is None

    def one_request() -> None:
        tracing.server_span("GET", None)
        for _ in range(3):
            with tracing.redis_span("GET"):
                pass
        with tracing.http_span("GET", "http://127.0.0.1/v1/integrations", peer="kryptos-data"):
            pass

    n = 200_000
    return min(timeit.repeat(one_request, number=n, repeat=5)) / n * 1e9


# -- the run ------------------------------------------------------------------------------------------------


class _TimeLimit(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> Any:
    if signum == signal.SIGALRM:
        raise _TimeLimit("the benchmark's time limit was reached")
    raise KeyboardInterrupt


def _check_once(port: int, cookie: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", API_PATH, headers={"Cookie": cookie, "X-CSRF": "1", "Accept": "application/json"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {API_PATH} on port {port} answered {response.status}: {body[:300]!r}")


def _benchmark(args: argparse.Namespace, tmp: Path) -> list[str]:
    with Processes() as procs:
        stack = _start(procs, tmp)
        settings = load_settings(stack.env)
        seeder = Seeder(settings, stack.redis_url)
        cookie_values = asyncio.run(seeder.seed(args.sessions))
        cookies = tmp / "cookies.txt"
        cookies.write_text("".join(f"{settings.session_cookie_name}={v}\n" for v in cookie_values), encoding="ascii")
        for server in stack.bffs.values():
            _check_once(server.port, f"{settings.session_cookie_name}={cookie_values[0]}")
        loadgen = LoadGenerator(args.loadgen)
        redis = Redis.from_url(stack.redis_url, socket_timeout=30)
        quiet = Quiet(max_wait=args.quiet_wait) if args.quiet_wait > 0 else None
        targets = []
        for mode, server in stack.bffs.items():
            pids = {"bff": server.pid, "upstream": stack.upstream.pid, "redis": stack.redis.pid}
            if mode in stack.sinks:
                pids["sink"] = stack.sinks[mode].pid
            targets.append(Target(mode, server.port, API_PATH, "bff", pids))
        runs: dict[str, list[Run]] = {t.name: [] for t in targets}
        requests = dict.fromkeys(MODES, 0)  # every request each bff answered, warm-up included
        try:
            print(f"stack up; {args.sessions} sessions seeded; load from {loadgen.describe()}", flush=True)
            for target in targets:  # warm-up
                run = measure(
                    loadgen, redis, target, round_no=0, connections=args.connections, duration=2, cookies=cookies
                )
                requests[target.name] += run.load.requests
            for run in measure_rounds(
                loadgen,
                redis,
                targets,
                rounds=args.rounds,
                connections=args.connections,
                duration=args.duration,
                cookies=cookies,
                quiet=quiet,
                before=lambda _: asyncio.run(seeder.touch()),
            ):
                if not run.clean:
                    raise RuntimeError(f"{run.target}: {run.load.non2xx} non-2xx, {run.load.socket_errors} errors")
                runs[run.target].append(run)
                requests[run.target] += run.load.requests
                print(
                    f"round {run.round} tracing {run.target:9} {run.load.rps:7,.0f} req/s  "
                    f"p99 {run.load.p99_ms:6.2f} ms  bff CPU {run.cpu_us['bff']:6.1f} µs/req  "
                    f"other load {run.foreign_cores:.2f} cores",
                    flush=True,
                )
        finally:
            redis.close()
        exported: dict[str, float] = {}
        for mode, sink in stack.sinks.items():
            stack.bffs[mode].stop()  # its lifespan's end exports the spans still queued
            exported[mode] = _spans_received(sink.port) / max(requests[mode], 1)
    return _report(args, runs, exported)


def _report(args: argparse.Namespace, runs: dict[str, list[Run]], spans: dict[str, float]) -> list[str]:
    def median(mode: str, value: str) -> float:
        return statistics.median(
            {"cpu": r.cpu_us["bff"], "rps": r.load.rps, "p50": r.load.p50_ms, "p99": r.load.p99_ms}[value]
            for r in runs[mode]
        )

    off = median("off", "cpu")
    other = max(r.foreign_cores for mode_runs in runs.values() for r in mode_runs)
    lines = [
        f"bench.tracing: {args.rounds} round(s) x {args.duration:g} s per bff, {args.connections} connections, "
        f"GET {API_PATH} over {args.sessions} sessions; medians of the rounds",
        "",
        "| bff serve --workers 1 | req/s | p50 ms | p99 ms | bff CPU µs/req | vs off | spans/req | sink CPU µs/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        cpu = median(mode, "cpu")
        sink = f"{statistics.median(r.cpu_us['sink'] for r in runs[mode]):.1f}" if mode in spans else "-"
        lines.append(
            f"| tracing {mode} | {median(mode, 'rps'):,.0f} | {median(mode, 'p50'):.2f} | {median(mode, 'p99'):.2f} "
            f"| {cpu:.1f} | {cpu - off:+.1f} µs ({(cpu / off - 1) * 100:+.0f} %) "
            f"| {spans.get(mode, 0):.2f} | {sink} |"
        )
    per_round = {
        mode: ", ".join(
            f"{r.cpu_us['bff'] - o.cpu_us['bff']:+.1f}" for r, o in zip(runs[mode], runs["off"], strict=True)
        )
        for mode in MODES
        if mode != "off"
    }
    lines += [
        "",
        "- bff CPU per request, traced minus off, per round: "
        + "; ".join(f"{mode}: {values} µs" for mode, values in per_round.items()),
        f"- tracing off: what the request path calls into bff.tracing (one server_span, three redis_span, one "
        f"http_span) takes {_hooks_off_ns():.0f} ns per request in all, and bff imports no opentelemetry module "
        "(tests/test_tracing.py)",
        f"- other load on the machine during the runs: up to {other:.2f} cores (busy time not ours); runs with much "
        "of it understate req/s and inflate CPU per request",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["sink"]:
        sink_args = argparse.ArgumentParser(prog="bench.tracing sink")
        sink_args.add_argument("--port", type=int, required=True)
        _sink(sink_args.parse_args(sys.argv[2:]).port)
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 round x 3 s per bff")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds per target per round")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--quiet-wait", type=float, help="wait up to this long for a quiet machine before each run")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if args.quick else 20.0)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(int(120 + args.rounds * len(MODES) * (args.duration + args.quiet_wait + 15)))
    tmp = Path(tempfile.mkdtemp(prefix="bff-bench-tracing-"))
    try:
        lines = _benchmark(args, tmp)
    except (_TimeLimit, KeyboardInterrupt, RuntimeError) as exc:
        print(f"\nbenchmark stopped: {type(exc).__name__}: {exc}\nserver logs kept in {tmp}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        signal.alarm(0)
    shutil.rmtree(tmp, ignore_errors=True)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
