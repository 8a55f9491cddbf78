"""The results as Markdown: the summary table and the goals first, then per-round ratios, the raw rounds, Redis,
latency by concurrency, scale and the machine.

Every ratio is of two numbers from the same round (the peers run in the same run, interleaved with bff), and
the report shows each round's ratio beside their median: the spread between rounds is the noise.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench._measure import Run

# The goals for one bff worker against the Node BFF, in the same run.
GOAL_RATIO, MOONSHOT_RATIO = 1.6, 2.0  # req/s ÷ the Node BFF's
GOAL_CPU_US, MOONSHOT_CPU_US = 250.0, 200.0  # bff CPU µs per proxied request
SESSION_BYTES_GOAL = 2048
NODE = "node bff"
# The summary table's order; targets not named here follow in the order they ran.
ORDER = (
    "bff",
    "bff info-log",
    "bff verify",
    "bff 2 workers",
    NODE,
    "nginx",
    "upstream",
    "nginx → bff proxy",
    "nginx ext-authz",
)


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    cpu: str  # "front": CPU of each target's front process; "all": of every process taking part
    why: str


# Each ratio is a ÷ b in one round: req/s (higher is better for a), CPU µs and p99 (lower is better for a).
COMPARISONS = (
    Comparison("bff", NODE, "front", "the goal: one worker each, CPU of the BFF process"),
    Comparison("bff info-log", NODE, "front", "bff with one access-log line per request"),
    Comparison("bff 2 workers", NODE, "front", "bff on both cores (CPU of the master and its workers)"),
    Comparison("bff verify", NODE, "front", "bff's share of a call in external-authorization mode, headers only"),
    Comparison("nginx ext-authz", NODE, "all", "the whole call behind nginx auth_request, every process"),
    Comparison("nginx → bff proxy", NODE, "all", "the whole call, nginx in front of bff's proxy, every process"),
    Comparison("bff", "nginx", "front", "nginx proxy_pass: the floor of a proxy hop"),
    Comparison("bff", "upstream", "all", "the upstream alone (CPU: bff + upstream + redis vs the upstream)"),
    Comparison("bff verify", "bff", "front", "per verified vs per proxied request, the same process"),
    Comparison("bff info-log", "bff", "front", "the price of the access log"),
    Comparison("bff 2 workers", "bff", "front", "2 workers vs 1"),
)


@dataclass
class Results:
    mode: str
    settings: list[tuple[str, str]]
    rounds: list[Run] = field(default_factory=list)
    sweep: list[tuple[str, Run]] = field(default_factory=list)  # (call, run) at 1, 32, 128 connections
    redis_lines: list[str] = field(default_factory=list)
    scale_lines: list[str] = field(default_factory=list)
    sign_in_lines: list[str] = field(default_factory=list)  # bench._curve.sign_ins
    refresh_lines: list[str] = field(default_factory=list)  # bench._curve.refresh_cost
    profile_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def front_cpu(run: Run) -> float:
    """CPU µs per request of the process the target is about."""
    return run.cpu_us.get(run.front or run.target.split(" ")[0], float("nan"))


def all_cpu(run: Run) -> float:
    """CPU µs per request of every process taking part."""
    return sum(run.cpu_us.values())


def _cpu_of(kind: str) -> Callable[[Run], float]:
    return front_cpu if kind == "front" else all_cpu


def _rps(run: Run) -> float:
    return run.load.rps


def _p99(run: Run) -> float:
    return run.load.p99_ms


def _names(results: Results, *, clean: bool = True) -> list[str]:
    seen = list(dict.fromkeys(r.target for r in results.rounds if r.clean or not clean))
    return [n for n in ORDER if n in seen] + [n for n in seen if n not in ORDER]


def _runs(results: Results, name: str, *, clean: bool = True) -> list[Run]:
    """The target's runs; only those with no error answer unless ``clean`` is False (the others are flagged in
    the notes and left out of medians and ratios)."""
    return [r for r in results.rounds if r.target == name and (r.clean or not clean)]


def _paired(results: Results, a: str, b: str) -> list[tuple[int, Run, Run]]:
    """(round, run of a, run of b) for every round that measured both."""
    of_a = {r.round: r for r in _runs(results, a)}
    of_b = {r.round: r for r in _runs(results, b)}
    return [(n, of_a[n], of_b[n]) for n in sorted(of_a.keys() & of_b.keys())]


def _ratios(pairs: Sequence[tuple[int, Run, Run]], value: Callable[[Run], float]) -> list[float]:
    return [value(a) / value(b) if value(b) else float("nan") for _, a, b in pairs]


def medians(results: Results) -> dict[str, dict[str, float]]:
    """Per target, the median of the rounds' req/s and front-process CPU µs per request."""
    return {
        name: {
            "rps": _median([_rps(r) for r in _runs(results, name)]),
            "cpu": _median([front_cpu(r) for r in _runs(results, name)]),
        }
        for name in _names(results)
    }


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**NOT met**"


def _machine_line(machine: list[tuple[str, str]], results: Results) -> str:
    info = dict(machine)
    rounds = max((r.round for r in results.rounds), default=0)
    seconds = _median([r.load.duration_s for r in results.rounds])
    connections = _median([r.connections for r in results.rounds])
    return (
        f"Machine: {info.get('CPU', '?')}, {info.get('nproc', '?')} CPUs (nproc), {info.get('date', '?')}; "
        f"{connections:.0f} connections, medians of {rounds} interleaved round{'s' if rounds != 1 else ''} × "
        f"{seconds:.0f} s per target, every target in the same run (`bench/run`)."
    )


def _summary(results: Results, machine: list[tuple[str, str]]) -> list[str]:
    out = [
        "## Summary",
        "",
        "| target | req/s | p50 ms | p99 ms | CPU µs/req: front process | CPU µs/req: all processes | processes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name in _names(results):
        runs = _runs(results, name)
        front = runs[0].front or name.split(" ")[0]
        others = [p for p in runs[0].cpu_us if p != front]
        out.append(
            f"| {name} | {_median([_rps(r) for r in runs]):,.0f} | {_median([r.load.p50_ms for r in runs]):.2f} "
            f"| {_median([_p99(r) for r in runs]):.2f} | {_median([front_cpu(r) for r in runs]):.0f} "
            f"| {_median([all_cpu(r) for r in runs]):.0f} | {' + '.join([front, *others])} |"
        )
    return [*out, "", _machine_line(machine, results)]


def _goals(results: Results) -> list[str]:
    out = ["## bff against the Node BFF, round by round", ""]
    pairs = _paired(results, "bff", NODE)
    if not pairs:
        return [*out, "The Node BFF did not run (see Notes), so the goals against it are not judged.", ""]
    out += [
        "| round | bff req/s | node req/s | req/s ÷ | bff CPU µs | node CPU µs | CPU ÷ | bff p99 ms | node p99 ms "
        "| p99 ÷ |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, a, b in pairs:
        out.append(
            f"| {n} | {_rps(a):,.0f} | {_rps(b):,.0f} | {_rps(a) / _rps(b):.2f}× | {front_cpu(a):.0f} "
            f"| {front_cpu(b):.0f} | {front_cpu(a) / front_cpu(b):.2f} | {_p99(a):.2f} | {_p99(b):.2f} "
            f"| {_p99(a) / _p99(b):.2f} |"
        )
    rps = _ratios(pairs, _rps)
    cpu = [front_cpu(a) for _, a, _ in pairs]
    cpu_ratio = _ratios(pairs, front_cpu)
    p99 = _ratios(pairs, _p99)
    node_cpu = _median([front_cpu(b) for _, _, b in pairs])
    out.append(
        f"| **median** | {_median([_rps(a) for _, a, _ in pairs]):,.0f} "
        f"| {_median([_rps(b) for _, _, b in pairs]):,.0f} | **{_median(rps):.2f}×** | **{_median(cpu):.0f}** "
        f"| {node_cpu:.0f} | **{_median(cpu_ratio):.2f}** | {_median([_p99(a) for _, a, _ in pairs]):.2f} "
        f"| {_median([_p99(b) for _, _, b in pairs]):.2f} | **{_median(p99):.2f}** |"
    )
    n = len(pairs)
    connections = pairs[0][1].connections

    def count(values: list[float], ok: Callable[[float], bool]) -> str:
        return f"{sum(1 for v in values if ok(v))} of {n} rounds"

    out += [
        "",
        "Each ratio is bff's number ÷ the Node BFF's in the same round; the goals are judged on the median of the "
        "rounds' ratios (bff at log level warning, one worker, against the Node BFF's one process).",
        "",
        f"- req/s ≥ {GOAL_RATIO}× the Node BFF's: {_median(rps):.2f}× {_yes(_median(rps) >= GOAL_RATIO)} "
        f"({count(rps, lambda v: v >= GOAL_RATIO)}); moonshot ≥ {MOONSHOT_RATIO:.0f}×: "
        f"{_yes(_median(rps) >= MOONSHOT_RATIO)} ({count(rps, lambda v: v >= MOONSHOT_RATIO)})",
        f"- CPU ≤ {GOAL_CPU_US:.0f} µs per proxied request: {_median(cpu):.0f} µs {_yes(_median(cpu) <= GOAL_CPU_US)} "
        f"({count(cpu, lambda v: v <= GOAL_CPU_US)}); moonshot ≤ {MOONSHOT_CPU_US:.0f} µs: "
        f"{_yes(_median(cpu) <= MOONSHOT_CPU_US)} ({count(cpu, lambda v: v <= MOONSHOT_CPU_US)}); "
        f"the Node BFF's {node_cpu:.0f} µs, bff ÷ Node {_median(cpu_ratio):.2f}",
        f"- p99 at {connections} connections no worse than the Node BFF's: ratio {_median(p99):.2f} "
        f"{_yes(_median(p99) <= 1.0)} ({count(p99, lambda v: v <= 1.0)})",
        "",
    ]
    if connections != 32:
        out.insert(-1, f"- (the issue's p99 goal is at 32 connections; this run used {connections})")
    return out


def _cell(
    rounds: Sequence[int], pairs: Sequence[tuple[int, Run, Run]], value: Callable[[Run], float], suffix: str = ""
) -> tuple[str, str]:
    """Every round's ratio, in round order ("—" for a round without both clean runs), and their median."""
    ratios = dict(zip([n for n, _, _ in pairs], _ratios(pairs, value), strict=True))
    each = " · ".join(f"{ratios[n]:.2f}" if n in ratios else "—" for n in rounds)
    return each, f"**{_median(list(ratios.values())):.2f}{suffix}**"


def _comparisons(results: Results) -> list[str]:
    rows = []
    rounds = sorted({r.round for r in results.rounds})
    for c in COMPARISONS:
        pairs = _paired(results, c.a, c.b)
        if not pairs:
            continue
        rps, rps_m = _cell(rounds, pairs, _rps, "×")
        cpu, cpu_m = _cell(rounds, pairs, _cpu_of(c.cpu))
        p99, p99_m = _cell(rounds, pairs, _p99)
        rows.append(f"| {c.a} ÷ {c.b} | {c.why} | {rps} | {rps_m} | {c.cpu} | {cpu} | {cpu_m} | {p99} | {p99_m} |")
    if not rows:
        return []
    return [
        "## Ratios, round by round",
        "",
        "Each cell lists the ratio in every round (round 1 first; — where a run was not clean), then their "
        "median. req/s ÷ above 1, CPU ÷ and p99 ÷ below 1 favour the first target. CPU is of the front process "
        "(the BFF, nginx, the upstream) or of every process taking part (`all`).",
        "",
        "| ratio | what | req/s ÷ by round | median | CPU | CPU ÷ by round | median | p99 ÷ by round | median |",
        "|---|---|---|---:|---|---|---:|---|---:|",
        *rows,
        "",
        *_external_authorization(results),
    ]


def _external_authorization(results: Results) -> list[str]:
    """The two modes side by side, from the same rounds: bff's CPU per verified request against its CPU per
    proxied request, and both modes end to end behind nginx when nginx was measured."""
    pairs = _paired(results, "bff verify", "bff")
    if not pairs:
        return []
    verify = _median([front_cpu(a) for _, a, _ in pairs])
    saved = _median([front_cpu(b) - front_cpu(a) for _, a, b in pairs])
    share = _median(_ratios(pairs, front_cpu))
    out = [
        "**External authorization (`/auth/verify`) against the proxy (same bff process, log level warning)**",
        "",
        f"- bff CPU per verified request {verify:.0f} µs: {100 * share:.0f} % of its CPU per proxied request in the "
        f"same round, {saved:.0f} µs less per call (medians of the rounds)",
    ]
    ends = ("nginx → bff proxy", "nginx ext-authz")
    if all(_runs(results, name) for name in ends):
        out.append("- end to end behind nginx (the upstream answers the call in both; medians of the rounds):")
        for name in ends:
            runs = _runs(results, name)
            cpu = {p: _median([r.cpu_us[p] for r in runs if p in r.cpu_us]) for p in runs[0].cpu_us}
            each = ", ".join(f"{p} {v:.0f}" for p, v in cpu.items())
            out.append(
                f"  - {name}: {_median([_rps(r) for r in runs]):,.0f} req/s, p99 "
                f"{_median([_p99(r) for r in runs]):.2f} ms; CPU µs per request: {each}; all "
                f"{_median([all_cpu(r) for r in runs]):.0f}"
            )
        pairs = _paired(results, "nginx ext-authz", "nginx → bff proxy")
        if pairs:
            out.append(
                f"  - ext-authz ÷ proxy behind nginx, by round: req/s "
                f"{' · '.join(f'{v:.2f}' for v in _ratios(pairs, _rps))}, CPU of every process "
                f"{' · '.join(f'{v:.2f}' for v in _ratios(pairs, all_cpu))}"
            )
    return [*out, ""]


def _cpu_cell(runs: Sequence[Run], name: str) -> str:
    values = [r.cpu_us[name] for r in runs if name in r.cpu_us]
    return f"{_median(values):.0f}" if values else "—"


def _medians_table(results: Results) -> list[str]:
    procs = ["bff", "node", "nginx", "upstream", "redis"]
    out = [
        "## Medians across rounds, every process",
        "",
        "| target | req/s | p50 ms | p90 ms | p99 ms | non-2xx / errors | CPU µs/req: "
        + " | ".join(procs)
        + " | load generator | other load (cores) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * (len(procs) + 2),
    ]
    for name in _names(results, clean=False):
        every = _runs(results, name, clean=False)
        runs = _runs(results, name) or every  # no clean run at all: show them, flagged
        bad = sum(r.load.non2xx + r.load.socket_errors for r in every)
        cells = " | ".join(_cpu_cell(runs, p) for p in procs)
        out.append(
            f"| {name} | {_median([_rps(r) for r in runs]):,.0f} | {_median([r.load.p50_ms for r in runs]):.2f} "
            f"| {_median([r.load.p90_ms for r in runs]):.2f} | {_median([_p99(r) for r in runs]):.2f} "
            f"| {bad if bad == 0 else f'**{bad} !!**'} | {cells} "
            f"| {_median([r.loadgen_us for r in runs]):.0f} | {_median([r.foreign_cores for r in runs]):.2f} |"
        )
    return [
        *out,
        "",
        "CPU µs/req is (utime + stime) of the process (and its children: uvicorn's workers, nginx's worker) over "
        "the run ÷ requests completed. Other load is the CPU the rest of the machine used meanwhile (busy time "
        "from /proc/stat not spent by the measured processes or the load generator), in cores: on a shared "
        "machine, runs with much of it are slower for reasons outside the code.",
    ]


def _every_round(results: Results) -> list[str]:
    out = [
        "## Every round",
        "",
        "| round | target | req/s | p50 ms | p99 ms | max ms | non-2xx | socket err | CPU µs/req | Redis writes "
        "| other load |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results.rounds:
        cpu = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu_us.items())
        out.append(
            f"| {r.round} | {r.target} | {_rps(r):,.0f} | {r.load.p50_ms:.2f} | {_p99(r):.2f} "
            f"| {r.load.max_ms:.1f} | {r.load.non2xx} | {r.load.socket_errors} | {cpu} | {r.redis_writes} "
            f"| {r.foreign_cores:.2f} |"
        )
    return out


def redis_traffic(results: Results) -> list[str]:
    """Redis commands (by name) and bytes per request of every target that uses Redis, over all its rounds."""
    out = [
        "| target | commands / request | by command | bytes in / request | bytes out / request |",
        "|---|---:|---|---:|---:|",
    ]
    for name in _names(results):
        runs = [r for r in _runs(results, name) if "redis" in r.cpu_us]
        if not runs:
            continue
        requests = max(sum(r.load.requests for r in runs), 1)
        by_command: dict[str, int] = {}
        for r in runs:
            for command, calls in r.redis_commands.items():
                by_command[command] = by_command.get(command, 0) + calls
        each = ", ".join(
            f"{command} {calls / requests:.3f}" if calls / requests >= 0.001 else f"{command} <0.001"
            for command, calls in sorted(by_command.items(), key=lambda kv: -kv[1])
        )
        out.append(
            f"| {name} | {sum(by_command.values()) / requests:.3f} | {each or 'none'} "
            f"| {sum(r.redis_bytes_in for r in runs) / requests:,.1f} "
            f"| {sum(r.redis_bytes_out for r in runs) / requests:,.1f} |"
        )
    return [
        *out,
        "",
        "From `INFO commandstats` and `INFO stats` (`total_net_input_bytes`, `total_net_output_bytes`) before and "
        "after each run, summed over the rounds ÷ the requests. Commands are every client's (the other servers "
        "are idle, so they are the target's), the bench's own INFO calls left out; the bytes include the bench's "
        "own two `INFO stats` per run (about 2 KB per run: under 0.1 byte per request). The Node BFF's `expire` "
        "is express-session's `touch` (connect-redis resets the TTL on every request).",
    ]


def _sweep(results: Results) -> list[str]:
    out = [
        "## Latency by concurrency",
        "",
        "| call | target | connections | req/s | p50 ms | p90 ms | p99 ms | CPU µs/req (front) | non-2xx / errors "
        "| other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = list(dict.fromkeys(label for label, _ in results.sweep))
    ordered = sorted(results.sweep, key=lambda lr: (labels.index(lr[0]), lr[1].connections))
    for label, r in ordered:
        bad = r.load.non2xx + r.load.socket_errors
        if bad:  # not valid: the errors, no figures (see the notes)
            cells = "— | — | — | — | —"
        else:
            cells = (
                f"{_rps(r):,.0f} | {r.load.p50_ms:.2f} | {r.load.p90_ms:.2f} | {_p99(r):.2f} "
                f"| {r.front or 'bff'} {front_cpu(r):.0f}"
            )
        out.append(
            f"| {label} | {r.target} | {r.connections} | {cells} | {bad if bad == 0 else f'**{bad} !!**'} "
            f"| {r.foreign_cores:.2f} |"
        )
    return [
        *out,
        "",
        "One run per call and concurrency, the calls interleaved at each concurrency (all of them at 1 "
        "connection, then at 32, then at 128).",
    ]


def render(results: Results, machine: list[tuple[str, str]]) -> str:
    out: list[str] = [f"# bff hot-path benchmark — {results.started:%Y-%m-%d %H:%M} UTC ({results.mode})", ""]
    out += [f"- {k}: {v}" for k, v in results.settings]
    out += ["", *_summary(results, machine), "", *_goals(results), *_comparisons(results)]
    if results.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    out += _medians_table(results)
    out += ["", *_every_round(results)]
    out += ["", "## Redis", "", *redis_traffic(results), "", *results.redis_lines]
    if results.sweep:
        out += ["", *_sweep(results)]
    if results.sign_in_lines or results.refresh_lines:
        out += ["", "## Sign-ins and refreshes", "", *results.sign_in_lines, "", *results.refresh_lines]
    out += ["", "## Scale", "", *results.scale_lines]
    if results.profile_lines:
        out += ["", "## Where the bff worker spends its CPU (py-spy)", "", *results.profile_lines]
    out += ["", "## Machine", ""] + [f"- {k}: {v}" for k, v in machine] + [""]
    return "\n".join(out)


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
        for p in ("uvicorn", "uvloop", "httptools", "starlette", "redis", "cryptography", "itsdangerous")
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
