"""Candidates side by side: ``bff serve`` as shipped against the same bff with one part swapped, in one run.

``bench/run candidates`` (or ``.venv/bin/python -m bench.candidates``) starts one Redis, the fixed upstream,
the emulator and one bff per variant, all on the same sessions, then runs every variant once per round in a
rotating order (the proxied API call, and ``/auth/verify`` as an ingress asks it) and prints each run and,
per round, each variant's req/s and CPU µs per request as a ratio to the shipped bff of the same round.

Variants (``--variants``, comma-separated; parts of one variant joined by ``+``, e.g. ``no-cache+no-hiredis``):

- ``bff``: ``bff serve --workers 1`` (uvicorn + uvloop + httptools, aiohttp upstream client): the reference;
- ``granian``: the same app under granian (Rust HTTP server, ASGI interface, uvloop, 1 worker);
- ``pyreqwest``: the upstream client on pyreqwest instead of aiohttp (:mod:`bench._variants`);
- ``no-hiredis``: redis-py's pure-Python parser even when hiredis is installed (:mod:`bench._variants`);
- ``no-cache``: ``BFF_SESSION_CACHE_SECONDS=0``, so every request reads and decrypts its session from Redis
  (the cache-miss path, where a Redis parser could matter);
- ``base=REV``: ``bff serve`` from git revision REV of this repository (``git archive`` into a temporary
  directory), to price a change of bff's own code against the code before it.

granian, pyreqwest and hiredis are not project dependencies: ``bench/run candidates`` installs them into
``.venv`` first, and the next ``scripts/bootstrap`` removes them again. Results go to
``bench/results/candidates-latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from redis import Redis

from bench._load import BENCH_DIR, LoadGenerator
from bench._measure import Quiet, Run, Target, measure, measure_rounds
from bench._procs import Processes, Server
from bench._report import machine
from bench._seed import Seeder
from bench._stack import Stack, bff_env, start_stack
from bench._variants import VARIANTS
from bench.hotpath import API_PATH, VERIFY_HEADERS, VERIFY_PATH, _check_once, _write_cookies
from tests.support.redis_server import free_port

REFERENCE = "bff"


@dataclass(frozen=True)
class Variant:
    name: str
    server: Server


def _serve_args(port: int) -> list[str]:
    return ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def _variant(name: str, stack: Stack, tmp: Path) -> Variant:
    """One bff process for a variant: its parts joined by ``+`` (``no-cache+no-hiredis``)."""
    port = free_port()
    env = bff_env(
        port,
        stack.emulator.port,
        stack.upstream.port,
        stack.redis_url,
        stack.bff_env["BFF_CLIENT_SECRET"],
        "warning",
    )
    python = sys.executable
    parts = name.split("+")
    patches = [p for p in parts if p in VARIANTS]
    if "no-cache" in parts:  # every request reads its session from Redis: the cache-miss path
        env["BFF_SESSION_CACHE_SECONDS"] = "0"
    unknown = [p for p in parts if p not in VARIANTS and p not in ("granian", "no-cache") and not p.startswith("base=")]
    if unknown:
        raise SystemExit(f"unknown variant part(s) {unknown}")
    python_args = [python]
    for part in parts:
        if part.startswith("base="):
            source = tmp / part.replace("=", "-")
            source.mkdir()
            archive = subprocess.run(
                ["git", "archive", part.removeprefix("base="), "bff"],
                cwd=BENCH_DIR.parent,
                capture_output=True,
                check=True,
            ).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                tar.extractall(source, filter="data")
            # -P: no script directory on sys.path, so PYTHONPATH's older bff comes before this checkout's.
            python_args.append("-P")
            env["PYTHONPATH"] = os.pathsep.join([str(source), str(BENCH_DIR.parent)])
    if "granian" in parts:
        if patches:
            raise SystemExit("granian runs bff's own factory: it does not combine with " + ", ".join(patches))
        granian = str(Path(python).parent / "granian")
        args = [granian, "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
        args += ["--workers", "1", "--loop", "uvloop", "--http", "1", "--log-level", "warning"]
        args += ["--no-access-log", "bff.cli:app_from_environment"]
    elif patches:
        args = [*python_args, "-m", "bench._variants", ",".join(patches), *_serve_args(port)]
    else:
        args = [*python_args, "-m", "bff", *_serve_args(port)]
    log = tmp / f"bff-{name.replace('=', '-').replace('+', '-')}.log"
    return Variant(name, Server(f"bff {name}", args, port, log, env=env))


def _targets(variants: list[Variant], stack: Stack, paths: list[str]) -> list[Target]:
    targets = []
    for v in variants:
        pids = {"bff": v.server.pid, "upstream": stack.upstream.pid}
        if "api" in paths:
            targets.append(Target(f"{v.name} api", v.server.port, API_PATH, "bff", pids))
        if "verify" in paths:
            targets.append(Target(f"{v.name} verify", v.server.port, VERIFY_PATH, "bff", pids, VERIFY_HEADERS))
    return targets


def _report(runs: list[Run], rounds: int) -> list[str]:
    lines = ["| round | target | req/s | p50 ms | p99 ms | bff CPU µs/req | req/s ÷ bff | CPU ÷ bff |"]
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    ratios: dict[str, list[tuple[float, float]]] = {}
    for round_no in range(1, rounds + 1):
        here = {r.target: r for r in runs if r.round == round_no}
        for name, run in sorted(here.items()):
            kind = name.rsplit(" ", 1)[1]
            ref = here.get(f"{REFERENCE} {kind}")
            rps_ratio = run.load.rps / ref.load.rps if ref else float("nan")
            cpu_ratio = run.cpu_us["bff"] / ref.cpu_us["bff"] if ref else float("nan")
            ratios.setdefault(name, []).append((rps_ratio, cpu_ratio))
            lines.append(
                f"| {round_no} | {name} | {run.load.rps:,.0f} | {run.load.p50_ms:.2f} | {run.load.p99_ms:.2f} | "
                f"{run.cpu_us['bff']:.0f} | {rps_ratio:.2f} | {cpu_ratio:.2f} |"
            )
    lines += [
        "",
        "| target | median req/s | median bff CPU µs/req | req/s ÷ bff (each round) | CPU ÷ bff (each round) |",
    ]
    lines.append("|---|---:|---:|---|---|")
    for name, pairs in sorted(ratios.items()):
        mine = [r for r in runs if r.target == name]
        rps = statistics.median(r.load.rps for r in mine)
        cpu = statistics.median(r.cpu_us["bff"] for r in mine)
        lines.append(
            f"| {name} | {rps:,.0f} | {cpu:.0f} | {', '.join(f'{a:.2f}' for a, _ in pairs)} | "
            f"{', '.join(f'{b:.2f}' for _, b in pairs)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run candidates", description=__doc__)
    p.add_argument("--variants", default="bff,granian,pyreqwest,no-hiredis")
    p.add_argument("--paths", default="api,verify", help="api (the proxied call), verify (/auth/verify), or both")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--quiet-wait", type=float, default=10.0)
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    paths = args.paths.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bff-candidates-"))
    runs: list[Run] = []
    with Processes() as procs:
        stack = start_stack(procs, tmp, info_log=False, nginx=None)
        variants = [Variant(REFERENCE, stack.bff)]
        for name in names[1:]:
            variant = _variant(name, stack, tmp)
            procs.start(variant.server)
            variant.server.wait_http("/readyz", timeout=30)
            variants.append(variant)
        seeder = Seeder(stack.settings, stack.redis_url)
        values = asyncio.run(seeder.seed(1000))
        cookies = _write_cookies(tmp / "cookies.txt", stack.settings.session_cookie_name, values)
        first = f"{stack.settings.session_cookie_name}={values[0]}"
        expected = _check_once(stack.bff.port, API_PATH, first)[0]
        for v in variants:
            if _check_once(v.server.port, API_PATH, first)[0] != expected:
                raise RuntimeError(f"{v.name} answered the API call differently")
            _check_once(v.server.port, VERIFY_PATH, first, VERIFY_HEADERS)
        loadgen = LoadGenerator("auto", 1)
        redis = Redis.from_url(stack.redis_url)
        quiet = Quiet(max_wait=args.quiet_wait) if args.quiet_wait > 0 else None
        targets = _targets(variants, stack, paths)
        for target in targets:  # warm-up
            measure(loadgen, redis, target, round_no=0, connections=args.connections, duration=2, cookies=cookies)
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
            runs.append(run)
            flag = "" if run.clean else f"  <-- {run.load.non2xx} non-2xx, {run.load.socket_errors} errors"
            print(
                f"round {run.round} {run.target:22} {run.load.rps:8,.0f} req/s  p99 {run.load.p99_ms:6.2f} ms  "
                f"bff {run.cpu_us['bff']:5.0f} µs/req  other load {run.foreign_cores:.2f}{flag}",
                flush=True,
            )
        redis.close()
    shutil.rmtree(tmp, ignore_errors=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join(
        [
            f"# bff candidates side by side — {stamp}",
            "",
            f"- variants: {', '.join(names)}; {args.rounds} rounds × {args.duration:g} s, wrk -t1 "
            f"-c{args.connections}, order rotated each round; ratios are to `{REFERENCE}` in the same round",
            "",
            *_report(runs, args.rounds),
            "",
            "## Machine",
            "",
            *(f"- {k}: {v}" for k, v in machine([("load generator", loadgen.describe())])),
            "",
        ]
    )
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "candidates-latest.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
