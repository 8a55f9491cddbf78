"""A real browser against `bff dev`: Debian's Chromium driven by Playwright, one `bff dev` process per session.

Playwright's own browser download is never used: Chromium is launched from the system path with the flags
that keep it from phoning home (without them its background connections are refused on a closed network and
slow it down). Test modules skip themselves when Chromium is missing (`SKIP_REASON`; a module-level skip here
would break `pytest tests/e2e`, which loads this file before collection). When a test fails, every page it
opened is saved as a full-page screenshot with its console log in `.artifacts/e2e/`, next to the output that
`bff dev` wrote during the test.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx2
import pytest
import pytest_asyncio

from tests.support.processes import child_env, wait_ready
from tests.support.redis_server import free_port, stop_process

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page


def _chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = _chromium()
SKIP_REASON = "Chromium not installed: run scripts/install-browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts" / "e2e"
PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@dataclass(frozen=True)
class DevServer:
    """A running `bff dev`: the SPA, the BFF and the emulator on one origin.

    `client_secret` is the OAuth client's secret (BFF and emulator share it), chosen here so that the tests
    can look for it in everything a page receives.
    """

    base_url: str
    log: IO[str]
    client_secret: str

    @property
    def emulator_control(self) -> str:
        return f"{self.base_url}/_kryptos/_emulator"

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


@pytest.fixture(scope="session")
def bff_dev() -> Iterator[DevServer]:
    port = free_port()
    # Only PATH and HOME: a developer's own BFF_* variables would otherwise reach `bff dev`.
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    client_secret = secrets.token_urlsafe(32)
    env["BFF_EMULATOR_CLIENT_SECRET"] = client_secret
    # Output goes to a file, not a pipe: a chatty server must never block on a full pipe.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bff", "dev", "--port", str(port)],
            cwd=ROOT,
            env=child_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base_url = f"http://localhost:{port}"
            server = DevServer(base_url, log, client_secret)
            wait_ready(f"{base_url}/readyz", proc, server.output, what="bff dev", timeout=30)
            yield server
        finally:
            stop_process(proc, timeout=15)


@pytest.fixture
def fresh_emulator(bff_dev: DevServer) -> DevServer:
    """Every test starts from the seeded emulator: limits changed by PATCH, tokens and the request log reset."""
    response = httpx2.post(f"{bff_dev.emulator_control}/reset", json={}, timeout=10)
    assert response.status_code == 200, response.text
    return bff_dev


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip(SKIP_REASON)
    async_playwright = pytest.importorskip("playwright.async_api").async_playwright
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report on the item so that fixture teardown knows whether the test failed.
    report: pytest.TestReport = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


@dataclass
class _OpenedPage:
    context: BrowserContext
    page: Page
    console: list[str] = field(default_factory=list)


OpenPage = Callable[[], Awaitable["Page"]]


def _artifact_name(nodeid_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid_name).strip("_") or "test"


async def _save_artifacts(name: str, opened: list[_OpenedPage], server_output: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.server.txt").write_text(server_output, encoding="utf-8")
    for index, item in enumerate(opened, start=1):
        stem = name if index == 1 else f"{name}-{index}"
        try:
            await item.page.screenshot(path=ARTIFACTS / f"{stem}.png", full_page=True)
        except Exception as exc:  # a crashed or closed page must not hide the test's own failure
            item.console.append(f"[screenshot failed: {exc!r}]")
        lines = [f"url: {item.page.url}", *item.console]
        (ARTIFACTS / f"{stem}.console.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(
    browser: Browser, fresh_emulator: DevServer, request: pytest.FixtureRequest
) -> AsyncIterator[OpenPage]:
    """Open a page in a new browser context (its own cookie jar); screenshots of every page on failure."""
    opened: list[_OpenedPage] = []
    server_log_start = len(fresh_emulator.output())  # characters: the test's own output follows

    async def factory() -> Page:
        context = await browser.new_context(base_url=fresh_emulator.base_url, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = await context.new_page()
        item = _OpenedPage(context, page)

        def on_console(message: ConsoleMessage) -> None:
            item.console.append(f"[{message.type}] {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: item.console.append(f"[pageerror] {exc}"))
        opened.append(item)
        return page

    try:
        yield factory
    finally:
        call = request.node.stash.get(PHASE_REPORTS, {}).get("call")
        if call is not None and call.failed:
            output = fresh_emulator.output()[server_log_start:]
            await _save_artifacts(_artifact_name(request.node.name), opened, output)
        for item in opened:
            await item.context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(open_page: OpenPage) -> Page:
    return await open_page()
