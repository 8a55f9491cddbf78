"""The README's `helm install` command renders: the documentation a platform engineer follows stays true."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from tests.deploy.deploy_support import CHART, REPO, load_yaml_all, venv_tool


def _readme_install_args() -> list[str]:
    text = (REPO / "README.md").read_text()
    match = re.search(r"helm install bff \./helm/bff \\\n(.*?)\n\s*```", text, re.DOTALL)
    assert match, "README.md has no `helm install bff ./helm/bff` block"
    return shlex.split(match.group(1).replace("\\\n", " "))


def test_readme_helm_install_command_renders() -> None:
    helm = venv_tool("helm")
    if helm is None:
        pytest.skip("helm is not installed")
    result = subprocess.run(
        [helm, "template", "bff", str(CHART), *_readme_install_args()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = {doc["kind"] for doc in load_yaml_all(result.stdout) if doc}
    assert {"Deployment", "Service", "Ingress", "ConfigMap"} <= kinds
    assert "Secret" not in kinds  # existing secrets only: the chart creates none
