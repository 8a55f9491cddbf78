"""Fixtures for the deployment checks: the helm runner (one per session, results cached) and the CI scenarios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_support import SCENARIOS, Helm, Rendered, load_values, venv_tool


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = venv_tool("helm")
    if binary is None:
        pytest.skip("helm is not installed (the dev dependency helm-binary provides it in .venv/bin)")
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(params=SCENARIOS, ids=[path.name.removesuffix("-values.yaml") for path in SCENARIOS])
def scenario(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


@pytest.fixture
def values(scenario: Path) -> dict[str, Any]:
    return load_values(scenario)


@pytest.fixture
def rendered(helm: Helm, scenario: Path) -> Rendered:
    return helm.template("-f", str(scenario))
