"""The hot-path benchmark: one authenticated API call through ``bff serve``, against its peers in the same run.

Starts a private Redis, the fixed upstream (:mod:`bench.upstream`), the Kryptos emulator (the provider, so
``/readyz`` is real), ``bff serve --workers 1`` (log level warning, and a second one at info to price the
access log), ``bff serve --workers 2``, the Node BFF peer (:mod:`bench._node`: express + express-session +
connect-redis + http-proxy-middleware, when node is installed) and nginx when it is installed (``proxy_pass``
to the upstream, to bff, and ``auth_request`` to bff's ``/auth/verify``); seeds sessions straight into Redis
(bff's with its own code, the Node BFF's in express-session's form); then runs every target, ``/auth/verify``
(the external-authorization mode) among them, once per round, in a rotating order, and reports per-round
ratios and their medians, CPU per request of each server process, Redis commands, bytes and writes per
request, latency at 1/32/128 connections and the worker's memory after 100,000 sessions. Results go to
``bench/results/``. Run it with ``bench/run``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from redis import Redis

from bench import _curve, _node, _profile
from bench._load import BENCH_DIR, LoadGenerator
from bench._measure import Quiet, Run, Target, interleaved, is_write, measure
from bench._procs import Processes, descendants, rss_kib
from bench._report import NODE, SESSION_BYTES_GOAL, Results, machine, render
from bench._seed import Seeder
from bench._stack import Stack, find_nginx, start_stack
from bff.sessions.store import session_key

API_PATH = "/api/v1/integrations?page=1&pageSize=25"
UPSTREAM_PATH = "/v1/integrations?page=1&pageSize=25"
SESSION_PATH = "/auth/session"
VERIFY_PATH = "/auth/verify"
# What nginx's auth_request location sends for the same API call (README "External authorization").
VERIFY_HEADERS = (("X-Original-URI", API_PATH), ("X-Original-Method", "GET"))
GIB = 1 << 30


class _TimeLimit(Exception):
    pass


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke check: 1 round x 3 s, 10,000 scale sessions")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds per target per round")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--sessions", type=int, default=1000, help="sessions the load rotates over")
    p.add_argument("--scale-sessions", type=int, help="sessions for the memory figure (default 100,000)")
    p.add_argument("--sweep-duration", type=float, help="seconds per run of the 1/32/128-connection sweep")
    p.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--nginx", help="nginx binary (default: nginx on PATH; skipped when none)")
    p.add_argument("--no-info-log", action="store_true", help="skip the second bff at log level info")
    p.add_argument("--no-workers", action="store_true", help="skip the bff with 2 workers")
    p.add_argument("--no-node", action="store_true", help="skip the Node BFF peer")
    p.add_argument(
        "--quiet-wait",
        type=float,
        help="before each run, wait up to this many seconds for other work on the machine to drop below "
        "0.25 cores (default 20, quick 5; 0 turns it off)",
    )
    p.add_argument("--py-spy", action="store_true", help="profile the bff worker under load (needs py-spy)")
    p.add_argument("--time-limit", type=int, help="hard limit for the whole run, seconds")
    p.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.duration = args.duration or (3.0 if quick else 10.0)
    args.scale_sessions = args.scale_sessions if args.scale_sessions is not None else (10_000 if quick else 100_000)
    args.sweep_duration = args.sweep_duration or (2.0 if quick else 5.0)
    args.quiet_wait = args.quiet_wait if args.quiet_wait is not None else (5.0 if quick else 20.0)
    args.time_limit = args.time_limit or (600 if quick else 1800)
    return args


def _write_cookies(path: Path, name: str, values: list[str]) -> Path:
    path.write_text("".join(f"{name}={v}\n" for v in values), encoding="ascii")
    return path


def _check_once(
    port: int, path: str, cookie: str, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[bytes, dict[str, str]]:
    """One request by hand before any load: a misconfigured stack must fail here, not as 100 % non-2xx."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = {"Cookie": cookie, "X-CSRF": "1", "Accept": "application/json", **dict(headers)}
    conn.request("GET", path, headers=sent)
    response = conn.getresponse()
    body = response.read()
    answer = {name.lower(): value for name, value in response.getheaders()}
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path} on port {port} answered {response.status}: {body[:300]!r}")
    return body, answer


def _check_verify(port: int, cookie: str) -> None:
    """/auth/verify says yes with the credentials nginx would copy, and nothing in the body."""
    body, headers = _check_once(port, VERIFY_PATH, cookie, VERIFY_HEADERS)
    if body or not headers.get("authorization", "").startswith("Bearer ") or "x-client-secret" not in headers:
        raise RuntimeError(f"/auth/verify answered without the credentials: {sorted(headers)}, body {body[:100]!r}")


def _targets(stack: Stack, node_cookies: Path | None = None) -> list[Target]:
    up, redis = stack.upstream.pid, stack.redis.pid
    targets = [Target("upstream", stack.upstream.port, UPSTREAM_PATH, "upstream", {"upstream": up})]
    if stack.nginx is not None:
        targets.append(
            Target("nginx", stack.nginx.port, UPSTREAM_PATH, "nginx", {"nginx": stack.nginx.pid, "upstream": up})
        )
    for level, server in stack.bffs.items():
        name = "bff" if level == "warning" else "bff info-log"
        targets.append(Target(name, server.port, API_PATH, "bff", {"bff": server.pid, "upstream": up, "redis": redis}))
    # External authorization: the same session and call, asked of /auth/verify as nginx's auth_request does
    # (trusted peer, X-Original-URI / -Method, the cookie, X-CSRF); the answer is headers only.
    bff = stack.bff
    pids = {"bff": bff.pid, "redis": redis}
    targets.append(Target("bff verify", bff.port, VERIFY_PATH, "bff", pids, VERIFY_HEADERS))
    if stack.bff_workers is not None:
        workers = stack.bff_workers
        pids = {"bff": workers.pid, "upstream": up, "redis": redis}  # bff: the master and its workers
        targets.append(Target("bff 2 workers", workers.port, API_PATH, "bff", pids))
    if stack.node is not None and node_cookies is not None:
        pids = {"node": stack.node.pid, "upstream": up, "redis": redis}
        targets.append(Target(NODE, stack.node.port, API_PATH, "node", pids, cookies=node_cookies))
    if stack.nginx is not None and stack.nginx_ports:
        end_to_end = {"nginx": stack.nginx.pid, "bff": bff.pid, "upstream": up, "redis": redis}
        targets.append(Target("nginx → bff proxy", stack.nginx_ports["bff"], API_PATH, "nginx", end_to_end))
        targets.append(Target("nginx ext-authz", stack.nginx_ports["ext-authz"], API_PATH, "nginx", end_to_end))
    return targets


# What the bff processes' background ended-sessions sweep sends (bff.sessions.manager.sweep_ended: the lock's
# SET NX, EVALSHA for its compare-and-delete, the DEL inside it, and for sessions found due ZADD / ZREM / HDEL).
# It runs every 30 s in each process, whatever the load: a few writes per minute, against the hot path's one
# per request at least if it wrote at all.
_SWEEP_COMMANDS = frozenset({"set", "evalsha", "del", "script|load", "zadd", "zrem", "hdel"})
_BACKGROUND_PER_REQUEST = 0.001


def _writes(runs: list[Run]) -> dict[str, int]:
    """Redis writes during ``runs``, by command."""
    out: dict[str, int] = {}
    for r in runs:
        for command, calls in r.redis_commands.items():
            if is_write(command):
                out[command] = out.get(command, 0) + calls
    return out


def _counts(by_command: dict[str, int]) -> str:
    return ", ".join(f"{command} {calls}" for command, calls in sorted(by_command.items(), key=lambda kv: -kv[1]))


def _redis_section(redis: Redis, seeder: Seeder, results: Results) -> None:
    sample = seeder.ids[:50]
    keys = [session_key(i) for i in sample]
    sizes = [int(redis.memory_usage(k, samples=0) or 0) for k in keys]
    blob = [len(redis.get(k) or b"") for k in keys[:10]]
    avg = sum(sizes) / len(sizes)
    # Whatever else a login leaves per session (indexes for back-channel logout, ...): every key of the
    # database that is neither a session nor shared, counted once, divided by the sessions.
    others = [
        k
        for k in redis.scan_iter(count=1000)
        if not k.endswith(b":session") and not k.startswith(_node.SESSION_PREFIX.encode())
    ]
    other_bytes = sum(int(redis.memory_usage(k, samples=0) or 0) for k in others)
    per_session_other = other_bytes / max(len(seeder.ids), 1)
    total = avg + per_session_other
    ok = "**met**" if total <= SESSION_BYTES_GOAL else "**NOT met**"
    kinds = sorted({k.decode(errors="replace").rsplit(":", 1)[0].split("{")[0] for k in others})
    results.redis_lines += [
        f"- `MEMORY USAGE` of one session key: {avg:,.0f} bytes (mean of {len(sizes)}; min {min(sizes)}, "
        f"max {max(sizes)}); encrypted value {sum(blob) / len(blob):,.0f} bytes",
        f"- other keys written with the sessions: {len(others):,} ({', '.join(kinds) or 'none'}) = "
        f"{per_session_other:,.0f} bytes per session",
        f"- **Redis bytes per session: {total:,.0f}** (goal ≤ {SESSION_BYTES_GOAL:,}: {ok}); "
        f"sessions per GiB by `MEMORY USAGE`: {GIB / total:,.0f}",
    ]
    bff_runs = [r for r in results.rounds if r.target.startswith("bff")]  # bff's own, not the peers'
    writes = _writes(bff_runs)
    requests = sum(r.load.requests for r in bff_runs)
    gets = sum(r.redis_gets for r in bff_runs)
    seen = sorted({k for r in bff_runs for k in r.redis_commands if k != "get"})
    # Runs no BFF serves (upstream, nginx): what Redis did then is the bff processes' background work (the
    # ended-sessions sweep every BFF_SESSION_SWEEP_INTERVAL, in each process), which goes on in every run.
    idle = [r for r in results.rounds if "bff" not in r.cpu_us and "node" not in r.cpu_us]
    background = _writes(idle)
    rate = sum(writes.values()) / max(sum(r.load.duration_s for r in bff_runs), 1e-9)
    idle_rate = sum(background.values()) / max(sum(r.load.duration_s for r in idle), 1e-9)
    per_request = sum(writes.values()) / max(requests, 1)
    if not writes:
        verdict = "no write on the hot path"
    elif per_request < _BACKGROUND_PER_REQUEST and set(writes) <= _SWEEP_COMMANDS:
        verdict = (
            f"{rate:.1f} writes/s ({idle_rate:.1f}/s in the runs no BFF serves), {per_request:.5f} per request: the "
            "ended-sessions sweep each bff process runs every `BFF_SESSION_SWEEP_INTERVAL` (30 s; a lock `SET`, "
            "then `EVALSHA`, which `DEL`s it), whatever the load — no write on the hot path"
        )
    else:
        verdict = (
            f"**writes on the hot path**: {per_request:.4f} per request, {rate:.1f} writes/s against "
            f"{idle_rate:.1f}/s in the runs no BFF serves ({_counts(background) or 'none'})"
        )
    what = f" ({_counts(writes)})" if writes else ""
    results.redis_lines += [
        f"- Redis writes during the bff rounds (bff, bff info-log, bff verify, bff 2 workers): "
        f"{sum(writes.values())} over {requests:,} requests{what}: {verdict}; "
        f"GETs per request: {gets / max(requests, 1):.3f}; other commands seen: {', '.join(seen) or 'none'}",
        "- before each bff run the seeded sessions are re-saved as just used, so the run starts inside the "
        "sliding window (the BFF rewrites a session at most once per idle timeout / 10 = 180 s by default)",
    ]
    node_runs = [r for r in results.rounds if r.target == NODE]
    if node_runs:
        node_requests = max(sum(r.load.requests for r in node_runs), 1)
        node_writes = sum(r.redis_writes for r in node_runs)
        node_keys = list(itertools.islice(redis.scan_iter(match=_node.SESSION_PREFIX + "*", count=1000), 50))
        node_sizes = [int(redis.memory_usage(k, samples=0) or 0) for k in node_keys]
        results.redis_lines += [
            f"- the Node BFF (for comparison, not a goal): {node_writes / node_requests:.3f} writes per request "
            "(express-session's `touch`: connect-redis `EXPIRE`s the session on every request); `MEMORY USAGE` "
            f"of one of its sessions {sum(node_sizes) / max(len(node_sizes), 1):,.0f} bytes (mean of "
            f"{len(node_sizes)}; plain JSON, unencrypted)",
        ]


def _scale(
    stack: Stack,
    seeder: Seeder,
    loadgen: LoadGenerator,
    redis: Redis,
    args: argparse.Namespace,
    tmp: Path,
    quiet: Quiet | None,
) -> list[str]:
    count = args.scale_sessions
    if count <= 0:
        return ["(skipped)"]
    bff = stack.bff
    rss_before = rss_kib(bff.pid)
    peers = [f"bff {rss_before['VmRSS'] / 1024:,.1f} MiB"]
    if stack.node is not None:
        peers.append(f"node bff {rss_kib(stack.node.pid).get('VmRSS', 0) / 1024:,.1f} MiB")
    if stack.bff_workers is not None:
        family = [stack.bff_workers.pid, *descendants(stack.bff_workers.pid)]
        rss = sum(rss_kib(p).get("VmRSS", 0) for p in family)
        peers.append(f"bff 2 workers {rss / 1024:,.1f} MiB (master + workers)")
    mem_before = int(redis.info("memory")["used_memory"])
    started = time.monotonic()
    cookies = asyncio.run(seeder.seed_bulk(count))
    seeded_in = time.monotonic() - started
    mem_after = int(redis.info("memory")["used_memory"])
    per_session = (mem_after - mem_before) / count
    path = _write_cookies(tmp / "cookies-scale.txt", stack.settings.session_cookie_name, cookies)
    target = Target("bff", bff.port, API_PATH, "bff", {"bff": bff.pid, "redis": stack.redis.pid})
    # One wrk thread, so the cookies are used in file order and each session exactly once.
    run = measure(
        loadgen,
        redis,
        target,
        round_no=0,
        connections=32,
        duration=count / 400 + 30,
        cookies=path,
        limit=count,
        threads=1,
        quiet=quiet,
    )
    rss_after = rss_kib(bff.pid)
    used = min(run.load.requests, count)
    return [
        f"- seeded {count:,} sessions in {seeded_in:.1f} s (`SessionManager.save` on a `RedisStore` over a "
        "pipeline: the BFF's own keys, indexes, TTLs and encryption)",
        f"- Redis `used_memory` grew {(mem_after - mem_before) / 2**20:,.1f} MiB: {per_session:,.0f} bytes per "
        f"session with the keyspace's own overhead → **{GIB / per_session:,.0f} sessions per GiB**",
        f"- then {run.load.requests:,} requests at 32 connections over {used:,} distinct sessions in "
        f"{run.load.duration_s:.1f} s ({run.load.rps:,.0f} req/s, p99 {run.load.p99_ms:.1f} ms, "
        f"non-2xx {run.load.non2xx}, Redis writes {run.redis_writes})",
        f"- bff worker RSS: {rss_before['VmRSS'] / 1024:,.1f} MiB before, {rss_after['VmRSS'] / 1024:,.1f} MiB after "
        f"{used:,} sessions were used (peak {rss_after['VmHWM'] / 1024:,.1f} MiB)",
        f"- for comparison, RSS after the rounds and the latency sweep ({args.sessions:,} sessions each): "
        + ", ".join(peers),
    ]


def _profile_run(
    stack: Stack,
    loadgen: LoadGenerator,
    redis: Redis,
    cookies: Path,
    args: argparse.Namespace,
    tmp: Path,
    quiet: Quiet | None,
) -> list[str]:
    seconds = max(3, round(args.duration))
    raw = tmp / "profile.txt"
    if quiet is not None:
        quiet.wait()
    recorder = _profile.record(stack.bff.pid, seconds, raw)
    try:
        target = next(t for t in _targets(stack) if t.name == "bff")
        run = measure(
            loadgen, redis, target, round_no=0, connections=args.connections, duration=seconds, cookies=cookies
        )
        _, err = recorder.communicate(timeout=seconds + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        return [f"py-spy produced no profile: {err.decode(errors='replace')[-500:]}"]
    lines = [
        f"Recorded with `py-spy record --rate 250 --format raw` for {seconds} s during a bff run at "
        f"{args.connections} connections ({run.load.rps:,.0f} req/s while sampled).",
        "",
    ]
    return lines + _profile.render(_profile.summarise(raw))


def _describe(targets: list[Target]) -> str:
    what = {
        "upstream": "upstream alone",
        "nginx": "nginx proxy_pass to the upstream",
        "bff": "bff (1 worker, log level warning)",
        "bff info-log": "bff (1 worker, log level info)",
        "bff verify": "bff verify (/auth/verify, the external-authorization mode)",
        "bff 2 workers": "bff 2 workers (`--workers 2`, log level warning)",
        NODE: "node bff (express + express-session + connect-redis + http-proxy-middleware)",
        "nginx → bff proxy": "nginx → bff proxy",
        "nginx ext-authz": "nginx ext-authz (auth_request + proxy_pass)",
    }
    return ", ".join(what.get(t.name, t.name) for t in targets)


def _sweep(
    stack: Stack,
    targets: list[Target],
    loadgen: LoadGenerator,
    redis: Redis,
    seeder: Seeder,
    cookies: Path,
    args: argparse.Namespace,
    results: Results,
    quiet: Quiet | None,
) -> None:
    """Latency at 1, 32 and 128 connections: bff's /auth/session, its proxied call, the Node BFF's proxied
    call and /auth/verify, interleaved at each concurrency."""
    by_name = {t.name: t for t in targets}
    bff = by_name["bff"]
    calls = [("GET /auth/session", Target("bff", bff.port, SESSION_PATH, "bff", bff.pids))]
    calls.append((f"GET {API_PATH}", bff))
    if NODE in by_name:
        calls.append((f"GET {API_PATH}", by_name[NODE]))
    calls.append((f"GET {VERIFY_PATH} (the same call)", by_name["bff verify"]))
    for connections in (1, 32, 128):
        asyncio.run(seeder.touch())
        for label, target in calls:
            if target.name == NODE and stack.node is None:
                continue  # it exited (see the notes)
            run = measure(
                loadgen,
                redis,
                target,
                round_no=0,
                connections=connections,
                duration=args.sweep_duration,
                cookies=cookies,
                quiet=quiet,
            )
            results.sweep.append((label, run))
            flag = "" if run.clean else f"   <-- {run.load.non2xx} non-2xx, {run.load.socket_errors} socket errors!"
            print(
                f"sweep {target.name:9} {label} c={connections}: {run.load.rps:,.0f} req/s "
                f"p50 {run.load.p50_ms:.2f} ms p99 {run.load.p99_ms:.2f} ms{flag}",
                flush=True,
            )
            if not run.clean:
                results.notes.append(
                    f"**latency sweep {target.name} {label} at {connections} connections: {run.load.non2xx} "
                    f"non-2xx responses, {run.load.socket_errors} socket errors**"
                )
            _still_up(stack, results, f"the latency sweep ({target.name} at {connections} connections)")


def _still_up(stack: Stack, results: Results, during: str) -> None:
    """After a run: every process of bff's side must still be running (else stop with its log tail); the Node
    BFF may die (a peer's crash is its own finding): then say why, once, and measure it no more."""
    for server in (stack.redis, stack.upstream, *stack.bffs.values(), stack.bff_workers, stack.nginx):
        if server is not None:
            server.check_alive()
    node = stack.node
    if node is None or node.proc is None or node.proc.poll() is None:
        return
    tail = node.log.read_text(errors="replace")[-4000:] if node.log.exists() else ""
    error = next((line.strip() for line in tail.splitlines() if line.startswith(("Error", "TypeError"))), "")
    where = next((line.strip() for line in tail.splitlines() if line.strip().startswith("at ")), "")
    results.notes.append(
        f"**the Node BFF exited (code {node.proc.returncode}) during {during}: "
        f"`{_short(error or tail[-300:], 300)}` {_short(where, 200)}; it was not measured after that**"
    )
    print(f"the Node BFF exited during {during}: {error or tail[-300:]}", file=sys.stderr, flush=True)
    stack.node = None


def _seed_node(stack: Stack, count: int, tmp: Path, expected: bytes) -> Path | None:
    """The Node BFF's sessions and their cookie file; checks its answer equals the upstream's."""
    if stack.node is None:
        return None
    values = asyncio.run(_node.seed(stack.redis_url, count, secret=stack.node_secret))
    cookies = _write_cookies(tmp / "cookies-node.txt", _node.COOKIE_NAME, values)
    answer, _ = _check_once(stack.node.port, API_PATH, f"{_node.COOKIE_NAME}={values[0]}")
    if answer != expected:
        raise RuntimeError(f"the Node BFF's answer differs from the upstream's: {answer[:200]!r}")
    return cookies


def _benchmark(stack: Stack, args: argparse.Namespace, tmp: Path, results: Results) -> None:
    loadgen = LoadGenerator(args.loadgen, args.threads)
    results.settings.insert(0, ("load generator", loadgen.describe()))
    redis = Redis.from_url(stack.redis_url, socket_timeout=30)
    quiet = Quiet(max_wait=args.quiet_wait) if args.quiet_wait > 0 else None
    try:
        seeder = Seeder(stack.settings, stack.redis_url)
        cookie_values = asyncio.run(seeder.seed(args.sessions))
        cookies = _write_cookies(tmp / "cookies.txt", stack.settings.session_cookie_name, cookie_values)
        first = f"{stack.settings.session_cookie_name}={cookie_values[0]}"
        through_bff, _ = _check_once(stack.bff.port, API_PATH, first)
        direct, _ = _check_once(stack.upstream.port, UPSTREAM_PATH, first)
        if through_bff != direct:
            raise RuntimeError("the bff's answer differs from the upstream's")
        if stack.bff_workers is not None:
            for _ in range(4):  # each of the two workers, most likely
                if _check_once(stack.bff_workers.port, API_PATH, first)[0] != direct:
                    raise RuntimeError("the bff with 2 workers answered something else than the upstream")
        _check_once(stack.bff.port, SESSION_PATH, first)
        _check_verify(stack.bff.port, first)
        for name, port in stack.nginx_ports.items():
            if _check_once(port, API_PATH, first)[0] != direct:
                raise RuntimeError(f"nginx ({name}) answered something else than the upstream")
        node_cookies = _seed_node(stack, args.sessions, tmp, direct)
        targets = _targets(stack, node_cookies)
        results.settings.insert(1, ("targets per round", _describe(targets)))
        # Sign-ins first and the refreshes last: both spend the provider's token window (100 calls a minute,
        # bff/oidc/budget.py), so minutes of load between them let the second start with an empty window.
        print("sign-ins end to end (cookie → provider → callback → session)", flush=True)
        results.sign_in_lines = _curve.sign_ins(stack, seconds=args.duration, concurrency=4)
        print(f"stack up; {args.sessions} sessions seeded; warming up {len(targets)} targets", flush=True)
        for target in targets:
            measure(loadgen, redis, target, round_no=0, connections=args.connections, duration=2, cookies=cookies)

        for round_no, target in interleaved(targets, args.rounds):
            if target.name == NODE and stack.node is None:
                continue  # it exited (see the notes)
            if "bff" in target.pids:
                asyncio.run(seeder.touch())
            run = measure(
                loadgen,
                redis,
                target,
                round_no=round_no,
                connections=args.connections,
                duration=args.duration,
                cookies=cookies,
                quiet=quiet,
            )
            results.rounds.append(run)
            flag = "" if run.clean else f"   <-- {run.load.non2xx} non-2xx, {run.load.socket_errors} socket errors!"
            cpu = ", ".join(f"{k} {v:.0f} µs" for k, v in run.cpu_us.items())
            print(
                f"round {round_no} {target.name:17} {run.load.rps:9,.0f} req/s  p99 {run.load.p99_ms:6.2f} ms  "
                f"CPU/req: {cpu}  other load {run.foreign_cores:.2f} cores (waited {run.waited_s:.0f} s){flag}",
                flush=True,
            )
            if not run.clean:
                results.notes.append(
                    f"**round {round_no} {target.name}: {run.load.non2xx} non-2xx responses, "
                    f"{run.load.socket_errors} socket errors — its numbers are not valid (left out of the "
                    "medians and ratios)**"
                )
            _still_up(stack, results, f"round {round_no} ({target.name})")

        _sweep(stack, targets, loadgen, redis, seeder, cookies, args, results, quiet)
        busy = [r for r in results.rounds if r.foreign_cores > 0.2]
        if busy:
            worst = max(r.foreign_cores for r in busy)
            results.notes.append(
                f"the machine was running other work during {len(busy)} of {len(results.rounds)} runs (up to "
                f"{worst:.2f} cores besides the benchmark): those runs understate req/s; CPU µs per request is "
                "less affected"
            )
        _redis_section(redis, seeder, results)
        print("one token refresh: API calls on sessions whose access token expired", flush=True)
        results.refresh_lines = _curve.refresh_cost(stack, seeder, count=40 if args.quick else 90)
        if args.py_spy:
            if _profile.py_spy() is None:
                results.profile_lines = ["py-spy is not installed; skipped (.venv/bin/uv pip install py-spy)"]
            else:
                print("profiling the bff worker with py-spy", flush=True)
                asyncio.run(seeder.touch())
                results.profile_lines = _profile_run(stack, loadgen, redis, cookies, args, tmp, quiet)
        print(f"scale: seeding {args.scale_sessions:,} sessions and using each once", flush=True)
        results.scale_lines = _scale(stack, seeder, loadgen, redis, args, tmp, quiet)
    finally:
        redis.close()


def _on_signal(signum: int, frame: FrameType | None) -> Any:
    if signum == signal.SIGALRM:
        raise _TimeLimit("the benchmark's time limit was reached")
    raise KeyboardInterrupt


def _node_versions() -> str:
    """node's version and the Node BFF's locked dependencies, for the machine section."""
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10, check=False)
        lock = json.loads((_node.NODE_DIR / "package-lock.json").read_text())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return "—"
    wanted = ("express", "express-session", "connect-redis", "http-proxy-middleware", "redis")
    packages = lock.get("packages", {})
    locked = ", ".join(f"{p} {packages.get(f'node_modules/{p}', {}).get('version', '?')}" for p in wanted)
    return f"node {node.stdout.strip()}; {locked}"


def _short(reason: str, limit: int = 400) -> str:
    """One line of a (possibly multi-line) reason, for the report's notes."""
    text = " ".join(reason.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(args.time_limit)
    nginx = find_nginx(args.nginx)
    mode = "quick" if args.quick else "full"
    results = Results(
        mode=mode,
        settings=[
            ("rounds", f"{args.rounds} × {args.duration:g} s per target, order rotated each round, after 2 s warm-up"),
            ("connections", f"{args.connections} (wrk -t{args.threads} -c{args.connections})"),
            (
                "request",
                f"`GET {API_PATH}` with `X-CSRF: 1` and the session cookie, rotating over "
                f"{args.sessions:,} sessions (the Node BFF: as many of its own, cookie `{_node.COOKIE_NAME}`); "
                f"upstream and nginx get `GET {UPSTREAM_PATH}`; bff verify gets `GET {VERIFY_PATH}` with the same "
                f"cookie and X-CSRF plus `X-Original-URI: {API_PATH}` and "
                "`X-Original-Method: GET`, from a trusted peer (`BFF_TRUSTED_PROXIES=127.0.0.1/32` on every bff)",
            ),
            (
                "bff",
                "`bff serve --workers 1` (uvicorn, uvloop, httptools; one process) and `--workers 2` (a master and "
                "two workers), JSON logs to a file, Prometheus metrics on; provider = the Kryptos emulator (idle "
                "during runs), so /readyz is real",
            ),
            (
                "node bff",
                "bench/node/server.js: express 5, express-session + connect-redis (same Redis), "
                "http-proxy-middleware (keep-alive agent) to the same upstream; one process, NODE_ENV=production",
            ),
            (
                "quiet wait",
                f"before each run, up to {args.quiet_wait:g} s for other work on the machine to drop below 0.25 cores"
                if args.quiet_wait > 0
                else "off",
            ),
            ("upstream", "bench/upstream.py: Starlette, fixed 1,785-byte JSON, uvicorn 1 worker, uvloop + httptools"),
        ],
    )
    if not nginx:
        results.notes.append("nginx is not installed: the nginx targets (the floor of a proxy hop) were skipped")
    tmp = Path(tempfile.mkdtemp(prefix="bff-bench-"))
    ok = False
    node_ran = False
    try:
        with Processes() as procs:
            stack = start_stack(
                procs,
                tmp,
                info_log=not args.no_info_log,
                nginx=nginx,
                workers2=not args.no_workers,
                node=not args.no_node,
            )
            if stack.node_skipped:
                results.notes.append(f"**the Node BFF was skipped: {_short(stack.node_skipped)}**")
                print(f"the Node BFF is skipped: {stack.node_skipped}", file=sys.stderr, flush=True)
            node_ran = stack.node is not None
            _benchmark(stack, args, tmp, results)
        ok = True
    except (_TimeLimit, KeyboardInterrupt, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"\nbenchmark stopped: {type(exc).__name__}: {exc}\nserver logs kept in {tmp}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        signal.alarm(0)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.no_node:
        results.notes.append("the Node BFF was left out (--no-node)")
    extra = [("load generator", results.settings[0][1])]
    if node_ran:
        extra.append(("node bff", _node_versions()))
    if nginx:
        extra.append(
            ("nginx", subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False).stderr.strip())
        )
    text = render(results, machine(extra))
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    suffix = "-quick" if args.quick else ""
    (args.results / f"{stamp}{suffix}.md").write_text(text)
    (args.results / f"latest{suffix}.md").write_text(text)
    print("\n" + text)
    print(f"results written to {args.results / f'latest{suffix}.md'} and {args.results / f'{stamp}{suffix}.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
