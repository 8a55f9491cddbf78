"""One measured run: CPU of each server process from /proc and Redis command counts, around one load run."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis

from bench._load import LoadGenerator, LoadResult
from bench._procs import cpu_seconds, machine_busy_seconds

# Commands that change nothing; anything else a run causes counts as a write (conservative on purpose).
_READ_ONLY = frozenset(
    {"get", "mget", "exists", "ttl", "pttl", "type", "ping", "info", "memory", "dbsize", "scan", "hello", "select"}
    | {"client", "command", "config", "echo", "time", "strlen", "getrange"}
    | {"hget", "hmget", "hgetall", "hlen", "hexists", "zrange", "zrangebyscore", "zscore", "zcard", "zcount"}
    | {"smembers", "sismember", "scard", "lrange", "llen", "subscribe", "unsubscribe", "psubscribe", "punsubscribe"}
)


def is_write(command: str) -> bool:
    """Whether a command (as ``INFO commandstats`` names it, ``client|setname`` too) may change data."""
    return command.split("|")[0] not in _READ_ONLY


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    front: str  # the process this target is about: upstream, nginx or bff
    pids: Mapping[str, int]  # every process taking part, by name (the front one included)
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request besides X-CSRF, Accept and the cookie
    cookies: Path | None = None  # this target's own cookie file (the Node BFF's sessions), else the run's


@dataclass(frozen=True)
class Run:
    target: str
    round: int
    connections: int
    load: LoadResult
    cpu_us: dict[str, float]  # CPU µs per completed request, by process
    redis_writes: int
    redis_gets: int
    redis_commands: dict[str, int] = field(default_factory=dict)
    # Redis traffic during the run (INFO stats total_net_input_bytes / total_net_output_bytes): every client's,
    # the bench's own two INFO calls included (a few KiB per run).
    redis_bytes_in: int = 0
    redis_bytes_out: int = 0
    front: str = ""  # the process the target is about (Target.front)
    # CPU the rest of the machine used during the run, in cores (busy time not ours ÷ wall time): other
    # workloads on a shared machine skew every number, so each run says how much there was.
    foreign_cores: float = 0.0
    waited_s: float = 0.0  # how long the run waited for the machine to become quiet

    @property
    def clean(self) -> bool:
        return self.load.non2xx == 0 and self.load.socket_errors == 0 and self.load.requests > 0

    @property
    def loadgen_us(self) -> float:
        return self.load.loadgen_cpu_s * 1e6 / self.load.requests if self.load.requests else 0.0


@dataclass(frozen=True)
class Quiet:
    """Before a run, wait (up to ``max_wait`` s) until the rest of the machine uses < ``threshold`` cores.

    On a machine shared with other work (CI, other people's test runs), a run that starts during someone
    else's burst measures that burst. Our own servers are idle between runs, so what /proc/stat shows busy
    then is someone else's.
    """

    threshold: float = 0.25
    max_wait: float = 20.0
    window: float = 1.0

    def wait(self) -> float:
        started = time.monotonic()
        while time.monotonic() - started < self.max_wait:
            before = machine_busy_seconds()
            time.sleep(self.window)
            if (machine_busy_seconds() - before) / self.window < self.threshold:
                break
        return time.monotonic() - started


def interleaved(targets: Sequence[Target], rounds: int) -> Iterator[tuple[int, Target]]:
    """(round number, target) for every run: each round runs every target once, and each starts one target
    later than the round before, so no target is always measured first (on a machine still warming up) or
    always last."""
    for round_no in range(1, rounds + 1):
        shift = (round_no - 1) % len(targets)
        for target in [*targets[shift:], *targets[:shift]]:
            yield round_no, target


def measure_rounds(
    loadgen: LoadGenerator,
    redis: Redis,
    targets: Sequence[Target],
    *,
    rounds: int,
    connections: int,
    duration: float,
    cookies: Path | None,
    quiet: Quiet | None,
    before: Callable[[Target], None] | None = None,
) -> Iterator[Run]:
    """Every target once per round, in :func:`interleaved` order, ``before(target)`` ahead of each run."""
    for round_no, target in interleaved(targets, rounds):
        if before is not None:
            before(target)
        yield measure(
            loadgen,
            redis,
            target,
            round_no=round_no,
            connections=connections,
            duration=duration,
            cookies=cookies,
            quiet=quiet,
        )


def command_calls(redis: Redis) -> dict[str, int]:
    stats: dict[str, Any] = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def net_bytes(redis: Redis) -> tuple[int, int]:
    """Bytes Redis has read from and written to all its clients since it started."""
    stats: dict[str, Any] = redis.info("stats")
    return int(stats["total_net_input_bytes"]), int(stats["total_net_output_bytes"])


def measure(
    loadgen: LoadGenerator,
    redis: Redis,
    target: Target,
    *,
    round_no: int,
    connections: int,
    duration: float,
    cookies: Path | None,
    limit: int = 0,
    threads: int | None = None,
    quiet: Quiet | None = None,
) -> Run:
    waited = quiet.wait() if quiet is not None else 0.0
    cookies = target.cookies or cookies
    commands_before = command_calls(redis)
    bytes_before = net_bytes(redis)
    cpu_before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    busy_before = machine_busy_seconds()
    load = loadgen.run(
        target.port,
        target.path,
        connections=connections,
        duration=duration,
        cookies=cookies,
        limit=limit,
        threads=threads,
        headers=target.headers,
    )
    busy = machine_busy_seconds() - busy_before
    cpu_after = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    bytes_after = net_bytes(redis)
    commands_after = command_calls(redis)
    delta = {k: v - commands_before.get(k, 0) for k, v in commands_after.items() if v != commands_before.get(k, 0)}
    delta["info"] = delta.get("info", 3) - 3  # ours: INFO commandstats before, INFO stats before and after
    delta = {k: v for k, v in delta.items() if v}
    per_request = max(load.requests, 1)
    ours = sum(cpu_after[name] - cpu_before[name] for name in target.pids)
    return Run(
        target=target.name,
        round=round_no,
        connections=connections,
        load=load,
        cpu_us={name: (cpu_after[name] - cpu_before[name]) * 1e6 / per_request for name in target.pids},
        redis_writes=sum(v for k, v in delta.items() if is_write(k)),
        redis_gets=delta.get("get", 0),
        redis_commands=delta,
        redis_bytes_in=bytes_after[0] - bytes_before[0],
        redis_bytes_out=bytes_after[1] - bytes_before[1],
        front=target.front,
        waited_s=waited,
        foreign_cores=max(0.0, busy - ours - load.loadgen_cpu_s) / load.duration_s if load.duration_s else 0.0,
    )
