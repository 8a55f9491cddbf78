"""Helpers for the deployment checks: where things are, running helm, reading what it rendered.

Nothing here needs a Docker engine or a Kubernetes cluster: the chart is linted and rendered with `helm`, the
rendered manifests are parsed with PyYAML, and the Dockerfile is linted with hadolint and read as text.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev group

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "bff"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "bff"


def venv_tool(name: str) -> str | None:
    """A tool installed next to the running interpreter (the project's venv), else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


# libyaml's loader (PyYAML's C extension) when present: the chart tests parse rendered manifests hundreds of
# times, and the pure-Python loader was most of their CPU.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, just the C one


def load_yaml_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_LOADER))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else (lists included) is replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(scenario: Path) -> dict[str, Any]:
    """The values a scenario renders with: chart defaults overlaid with the scenario file."""
    defaults = load_yaml((CHART / "values.yaml").read_text())
    return deep_merge(defaults, load_yaml(scenario.read_text()) or {})


@dataclass(frozen=True)
class Rendered:
    """The documents `helm template` produced."""

    docs: tuple[dict[str, Any], ...]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.of_kind(kind)
        assert len(found) == 1, f"expected exactly one {kind}, got {len(found)}"
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"expected exactly one {kind} {name}, got {len(found)}"
        return found[0]

    def of_api(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["apiVersion"] == api_version and doc["kind"] == kind]

    def route(self, host: str, path: str) -> tuple[str, dict[str, Any]] | None:
        """(Ingress name, backend service) a request for ``host`` and ``path`` reaches, as a controller chooses
        among every Ingress rendered: the rules naming that host (else those naming none), then the longest
        matching path, an Exact one before a Prefix one of the same length (Kubernetes' Ingress semantics);
        Prefix matches whole path elements. ImplementationSpecific paths are read as ingress-nginx's regular
        expressions (``use-regex``): anchored at the start, case-insensitive. None: no rule matches."""
        rules = [(ingress, rule) for ingress in self.of_kind("Ingress") for rule in ingress["spec"]["rules"]]
        candidates = [(i, r) for i, r in rules if r.get("host") == host] or [
            (i, r) for i, r in rules if not r.get("host")
        ]
        best: tuple[tuple[int, int], str, dict[str, Any]] | None = None
        for ingress, rule in candidates:
            for entry in rule["http"]["paths"]:
                pattern, kind = entry["path"], entry.get("pathType", "ImplementationSpecific")
                if kind == "Exact":
                    matches = path == pattern
                elif kind == "Prefix":
                    wanted = [part for part in pattern.split("/") if part]
                    matches = [part for part in path.split("/") if part][: len(wanted)] == wanted
                else:
                    matches = re.match(pattern, path, re.IGNORECASE) is not None
                rank = (len(pattern.rstrip("/") if kind == "Prefix" else pattern), int(kind == "Exact"))
                if matches and (best is None or rank > best[0]):
                    best = (rank, ingress["metadata"]["name"], entry["backend"]["service"])
        return None if best is None else (best[1], best[2])

    @property
    def service(self) -> dict[str, Any]:
        """bff's own Service (external authorization adds an ExternalName one for the Kryptos API)."""
        return self.named("Service", RELEASE)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        pod: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return pod

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.pod["containers"]
        assert len(containers) == 1
        return containers[0]


class Helm:
    """Runs helm with isolated home directories and remembers every result for the session."""

    def __init__(self, binary: str, home: Path) -> None:
        self._binary = binary
        self._env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self._cache: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if args not in self._cache:
            self._cache[args] = subprocess.run(
                [self._binary, *args], capture_output=True, text=True, env=self._env, timeout=60, check=False
            )
        return self._cache[args]

    def lint(self, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(chart), *args)

    def template(self, *args: str, chart: Path = CHART) -> Rendered:
        result = self.run("template", RELEASE, str(chart), *args)
        assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
        docs = tuple(doc for doc in load_yaml_all(result.stdout) if doc)
        return Rendered(docs)

    def template_error(self, *args: str, chart: Path = CHART) -> str:
        """helm template is expected to fail: returns its error output."""
        result = self.run("template", RELEASE, str(chart), *args)
        assert result.returncode != 0, f"helm template {' '.join(args)} rendered although it should fail"
        return result.stderr
