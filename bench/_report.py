"""The results as Markdown: medians and goals first, then the raw rounds, Redis, latency, scale, machine."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench._measure import Run

# The anchors (same machine class, wrk -t1 -c32, medians of 3 interleaved rounds).
NODE_RPS = 2145.0
NODE_CPU_US = 515.0
ANCHORS = {"upstream": (11245.0, 88.0), "nginx": (10050.0, 37.0), "node bff": (NODE_RPS, NODE_CPU_US)}
GOAL_RATIO, STRETCH_RATIO = 1.5, 2.0
GOAL_CPU_US, STRETCH_CPU_US = 350.0, 250.0
SESSION_BYTES_GOAL = 2048


@dataclass
class Results:
    mode: str
    settings: list[tuple[str, str]]
    rounds: list[Run] = field(default_factory=list)
    sweep: list[tuple[str, Run]] = field(default_factory=list)  # (label, run) at 1, 32, 128 connections
    redis_lines: list[str] = field(default_factory=list)
    scale_lines: list[str] = field(default_factory=list)
    profile_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cpu_cell(runs: Sequence[Run], name: str) -> str:
    values = [r.cpu_us[name] for r in runs if name in r.cpu_us]
    return f"{_median(values):.0f}" if values else "—"


def medians(results: Results) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.target for r in results.rounds):
        runs = [r for r in results.rounds if r.target == name]
        front = name.split(" ")[0]
        out[name] = {
            "rps": _median([r.load.rps for r in runs]),
            "cpu": _median([r.cpu_us.get(front, float("nan")) for r in runs]),
        }
    return out


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def render(results: Results, machine: list[tuple[str, str]]) -> str:
    out: list[str] = [f"# bff hot-path benchmark — {results.started:%Y-%m-%d %H:%M} UTC ({results.mode})", ""]
    out += [f"- {k}: {v}" for k, v in results.settings]
    out += [""]
    procs = ["bff", "nginx", "upstream", "redis"]
    out += ["## Medians across rounds", ""]
    out += [
        "| target | req/s | p50 ms | p99 ms | non-2xx / errors | CPU µs/req: "
        + " | ".join(procs)
        + " | load generator | other load (cores) |",
        "|---|---:|---:|---:|---:|" + "---:|" * (len(procs) + 2),
    ]
    for name in dict.fromkeys(r.target for r in results.rounds):
        runs = [r for r in results.rounds if r.target == name]
        bad = sum(r.load.non2xx + r.load.socket_errors for r in runs)
        cells = " | ".join(_cpu_cell(runs, p) for p in procs)
        out.append(
            f"| {name} | {_median([r.load.rps for r in runs]):,.0f} | {_median([r.load.p50_ms for r in runs]):.2f} "
            f"| {_median([r.load.p99_ms for r in runs]):.2f} | {bad if bad == 0 else f'**{bad} !!**'} | {cells} "
            f"| {_median([r.loadgen_us for r in runs]):.0f} | {_median([r.foreign_cores for r in runs]):.2f} |"
        )
    out += [
        "",
        "CPU µs/req is (utime + stime) of the process (and its children) over the run ÷ requests completed. "
        "Other load is the CPU the rest of the machine used meanwhile (busy time from /proc/stat not spent by "
        "the measured processes or the load generator), in cores: on a shared machine, runs with much of it "
        "are slower for reasons outside the code.",
    ]
    out += ["", *_ratios(results)]
    if results.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in results.notes]
    out += ["", "## Every round", ""]
    out += [
        "| round | target | req/s | p50 ms | p99 ms | max ms | non-2xx | socket err | CPU µs/req | Redis writes "
        "| other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results.rounds:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_us.items())
        out.append(
            f"| {r.round} | {r.target} | {r.load.rps:,.0f} | {r.load.p50_ms:.2f} | {r.load.p99_ms:.2f} "
            f"| {r.load.max_ms:.1f} | {r.load.non2xx} | {r.load.socket_errors} | {cpu} | {r.redis_writes} "
            f"| {r.foreign_cores:.2f} |"
        )
    out += ["", "## Redis", "", *results.redis_lines]
    out += ["", "## Latency by concurrency (bff, log level warning)", ""]
    out += ["| call | connections | req/s | p50 ms | p90 ms | p99 ms | bff CPU µs/req | non-2xx | other load |"]
    out += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in results.sweep:
        out.append(
            f"| {label} | {r.connections} | {r.load.rps:,.0f} | {r.load.p50_ms:.2f} | {r.load.p90_ms:.2f} "
            f"| {r.load.p99_ms:.2f} | {r.cpu_us.get('bff', 0):.0f} | {r.load.non2xx} "
            f"| {r.foreign_cores:.2f} |"
        )
    out += ["", "## Scale", "", *results.scale_lines]
    if results.profile_lines:
        out += ["", "## Where the bff worker spends its CPU (py-spy)", "", *results.profile_lines]
    out += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in machine] + [""]
    return "\n".join(out)


def _ratios(results: Results) -> list[str]:
    med = medians(results)
    out = ["## Ratios and goals", ""]
    up = med.get("upstream")
    for name in ("bff", "bff info-log"):
        m = med.get(name)
        if m is None:
            continue
        rps, cpu = m["rps"], m["cpu"]
        label = "bff (log level warning)" if name == "bff" else "bff (log level info: one access-log line per request)"
        out += [f"**{label}**", ""]
        if up:
            out.append(f"- req/s vs the upstream alone: {rps / up['rps']:.2f}×")
        if "nginx" in med:
            out.append(f"- req/s vs nginx proxy_pass: {rps / med['nginx']['rps']:.2f}×")
        out.append(f"- req/s vs the Node BFF anchor ({NODE_RPS:,.0f}): {rps / NODE_RPS:.2f}×")
        out.append(
            f"- goal ≥ {GOAL_RATIO}× Node = {GOAL_RATIO * NODE_RPS:,.0f} req/s: {_yes(rps >= GOAL_RATIO * NODE_RPS)}; "
            f"stretch ≥ {STRETCH_RATIO}× = {STRETCH_RATIO * NODE_RPS:,.0f}: {_yes(rps >= STRETCH_RATIO * NODE_RPS)}"
        )
        out.append(
            f"- CPU per request {cpu:.0f} µs (Node BFF anchor {NODE_CPU_US:.0f}): goal ≤ {GOAL_CPU_US:.0f} µs "
            f"{_yes(cpu <= GOAL_CPU_US)}; stretch ≤ {STRETCH_CPU_US:.0f} µs {_yes(cpu <= STRETCH_CPU_US)}"
        )
        out.append("")
    if "bff" in med and "bff info-log" in med:
        b, i = med["bff"], med["bff info-log"]
        out.append(
            f"Access logging at info costs {i['cpu'] - b['cpu']:+.0f} µs CPU per request "
            f"and {100 * (i['rps'] / b['rps'] - 1):+.1f} % req/s."
        )
        out.append("")
    out += _external_authorization(results)
    out += ["Against the issue's anchors (measured there, not here): "]
    for name, (rps, cpu) in ANCHORS.items():
        here = med.get(name)
        if here:
            out.append(
                f"- {name}: here {here['rps']:,.0f} req/s, {here['cpu']:.0f} µs; anchor {rps:,.0f}, {cpu:.0f} µs"
            )
    return out


def _process_median(results: Results, target: str, process: str) -> float:
    return _median([r.cpu_us[process] for r in results.rounds if r.target == target and process in r.cpu_us])


def _external_authorization(results: Results) -> list[str]:
    """The two modes side by side: bff's CPU per verified request against its CPU per proxied request (the
    same process, the same run), and end to end behind nginx when nginx was measured."""
    names = {r.target for r in results.rounds}
    if not {"bff", "bff verify"} <= names:
        return []
    proxy, verify = _process_median(results, "bff", "bff"), _process_median(results, "bff verify", "bff")
    out = [
        "**External authorization (`/auth/verify`) against the proxy (same bff process, log level warning)**",
        "",
        f"- bff CPU per verified request {verify:.0f} µs against {proxy:.0f} µs per proxied request: "
        f"{100 * verify / proxy:.0f} % of it, {proxy - verify:.0f} µs less per call",
    ]
    if {"nginx → bff proxy", "nginx ext-authz"} <= names:
        rows = []
        for name in ("nginx → bff proxy", "nginx ext-authz"):
            runs = [r for r in results.rounds if r.target == name]
            cpu = {p: _process_median(results, name, p) for p in ("nginx", "bff", "upstream", "redis")}
            rows.append((name, _median([r.load.rps for r in runs]), _median([r.load.p99_ms for r in runs]), cpu))
        out.append("- end to end behind nginx (the upstream answers the call in both):")
        for name, rps, p99, cpu in rows:
            out.append(
                f"  - {name}: {rps:,.0f} req/s, p99 {p99:.2f} ms; CPU µs per request: bff {cpu['bff']:.0f}, "
                f"nginx {cpu['nginx']:.0f}, upstream {cpu['upstream']:.0f}, redis {cpu['redis']:.0f}; "
                f"all four {sum(cpu.values()):.0f}"
            )
    out.append("")
    return out


def _command(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "—"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "—"


def machine(extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    packages = ", ".join(
        f"{p} {metadata.version(p)}"
        for p in ("uvicorn", "uvloop", "httptools", "starlette", "aiohttp", "redis", "cryptography", "itsdangerous")
    )
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("nproc", _command(["nproc"])),
        ("CPU", model),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("packages", packages),
        # BENCH_SOURCE describes a tree that is not a git checkout (e.g. a `git archive` of one commit).
        ("source", os.environ.get("BENCH_SOURCE") or _command(["git", "describe", "--always", "--dirty"])),
        *extra,
    ]
