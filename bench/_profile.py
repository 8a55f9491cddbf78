"""A py-spy profile of the BFF worker under load, summarised by where the CPU goes (optional; ``--py-spy``).

py-spy is not a project dependency: install it into the venv for a measurement
(``.venv/bin/uv pip install py-spy``). It samples the running process from outside; the ``raw`` format is
collapsed stacks (``frame;frame;... count``). Self time is charged to the innermost Python frame, so work
done in C (httptools, uvloop, OpenSSL, hiredis) shows up under the Python function that called it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
_SITE = re.compile(r"(?:site|dist)-packages/(?P<pkg>[A-Za-z0-9_]+)")
_STDLIB = re.compile(r"/lib/python3\.\d+/(?P<mod>[A-Za-z0-9_]+)")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def bucket(path: str) -> str:
    """The package a source file belongs to: bff, starlette, aiohttp, redis, ... or stdlib:<module>.

    py-spy names files relative to their sys.path entry (``aiohttp/client.py``) when it can, else absolute.
    """
    if (m := _SITE.search(path)) is not None:
        top = m["pkg"]
    elif (m := _STDLIB.search(path)) is not None:
        top = m["mod"]
    else:
        top = path.lstrip("/").split("/", 1)[0].removesuffix(".py")
        if "/bff/" in path:
            top = "bff"
    return f"stdlib:{top}" if top in sys.stdlib_module_names else top


@dataclass(frozen=True)
class Profile:
    samples: int
    self_by_package: list[tuple[str, int]]
    inclusive_by_package: list[tuple[str, int]]
    top_functions: list[tuple[str, int]]
    bff_inclusive: list[tuple[str, int]]  # bff functions by samples with them on the stack


def record(pid: int, seconds: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds``; the caller drives load meanwhile and waits on the result."""
    tool = py_spy()
    if tool is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/uv pip install py-spy)")
    return subprocess.Popen(
        [
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarise(raw: Path, top: int = 15) -> Profile:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        parsed = [(m["func"], m["file"]) if (m := _FRAME.match(f)) else (f, f) for f in frames]
        if not parsed:
            continue
        total += count
        func, file = parsed[-1]
        self_time[bucket(file)] += count
        functions[f"{file.rsplit('site-packages/', 1)[-1]}: {func.split(' ')[0]}"] += count
        for package in {bucket(f) for _, f in parsed}:
            inclusive[package] += count
        for name in {f"{f.rsplit('bff/', 1)[-1]}: {fn.split(' ')[0]}" for fn, f in parsed if bucket(f) == "bff"}:
            ours[name] += count
    return Profile(
        total, self_time.most_common(), inclusive.most_common(top), functions.most_common(top), ours.most_common(top)
    )


def render(profile: Profile) -> list[str]:
    if not profile.samples:
        return ["(no samples)"]

    def share(n: int) -> str:
        return f"{100 * n / profile.samples:.1f} %"

    lines = [f"{profile.samples} samples of the bff worker (idle excluded).", ""]
    lines += ["| package (self time) | share |", "|---|---:|"]
    lines += [f"| {name} | {share(n)} |" for name, n in profile.self_by_package if n / profile.samples >= 0.005]
    lines += ["", "| package on the stack (inclusive) | share |", "|---|---:|"]
    lines += [f"| {name} | {share(n)} |" for name, n in profile.inclusive_by_package]
    lines += ["", "| hottest functions (self time) | share |", "|---|---:|"]
    lines += [f"| `{name}` | {share(n)} |" for name, n in profile.top_functions]
    lines += ["", "| bff functions (inclusive: on the stack) | share |", "|---|---:|"]
    lines += [f"| `{name}` | {share(n)} |" for name, n in profile.bff_inclusive]
    return lines
