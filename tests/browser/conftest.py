"""The browser layer: Debian's Chromium, driven by Playwright, enforces CORS for real.

Two static pages serve the same probe (``pages/``): one from the allowed origin
(http://127.0.0.1:<port>), one from a refused origin (http://127.0.0.2:<port>, another
site for the browser). Both call a real ``python -m gatehouse`` process. Each page
writes what it could read into its DOM; a screenshot of every page opened is kept in
tests/artefacts/browser/.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from tests.browser.support import SEARCH_LIMIT, ProbePage
from tests.helpers import ROOT, ApiServer

PAGES = Path(__file__).resolve().parent / "pages"
ARTEFACTS = ROOT / "tests" / "artefacts" / "browser"
MISSING = (
    "browser layer: chromium is not installed (run as root: scripts/ensure-system-deps chromium)"
)
CHROMIUM_ARGS = [
    "--no-sandbox",  # runs as root in CI containers, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",  # a small /dev/shm in containers crashes renderers
]


def _find_chromium() -> str | None:
    return shutil.which("chromium")


@functools.cache
def chromium() -> str | None:
    """Debian's Chromium; installed through scripts/ensure-system-deps when possible."""
    path = _find_chromium()
    if path is None:
        subprocess.run(
            [str(ROOT / "scripts" / "ensure-system-deps"), "chromium"], check=False, timeout=600
        )
        path = _find_chromium()
    return path


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: install only for tests that run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No Chromium: the layer reports as ONE skipped test, the rest of it deselected."""
    here = Path(__file__).parent
    layer = [item for item in items if here in item.path.parents]
    if not layer or chromium() is not None:
        return
    layer[0].add_marker(pytest.mark.skip(reason=MISSING))
    rest = set(layer[1:])
    config.hook.pytest_deselected(items=list(rest))
    items[:] = [item for item in items if item not in rest]


@pytest.fixture(scope="package")
def chromium_path() -> str:
    path = chromium()
    if path is None:  # a test selected some other way; the collection hook normally skips
        pytest.skip(MISSING)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def _loopback_alias_available(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


@dataclass
class Origins:
    allowed: str
    refused: str


@pytest.fixture(scope="package")
def origins() -> Iterator[Origins]:
    """The probe page served from two origins by http.server threads."""
    # 127.0.0.2 is another site for the browser (the allowed page is same-site with
    # the API); where only 127.0.0.1 exists, another port is still another origin.
    refused_host = "127.0.0.2" if _loopback_alias_available("127.0.0.2") else "127.0.0.1"
    handler = functools.partial(_QuietHandler, directory=str(PAGES))
    servers = []
    try:
        for host in ("127.0.0.1", refused_host):
            server = http.server.ThreadingHTTPServer((host, 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        allowed, refused = (f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers)
        yield Origins(allowed=allowed, refused=refused)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="package")
def api(origins: Origins, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One gatehouse process for the layer: memory limits, the test route on."""
    server = ApiServer(
        {
            "APP_ALLOWED_ORIGINS": origins.allowed,
            "APP_TRUSTED_HOSTS": "*",
            "APP_TEST_ROUTES_ENABLED": "true",
            "APP_RATE_LIMIT_SEARCH": f"{SEARCH_LIMIT}/minute",
        }
    )
    server.start(log_dir=tmp_path_factory.mktemp("api"))
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def launched_chromium(path: str, extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    """Headless Chromium; Playwright gives it a fresh user-data dir and removes it."""
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


@pytest.fixture(scope="package")
def browser(chromium_path: str) -> Iterator[Any]:
    with launched_chromium(chromium_path) as browser:
        yield browser


@pytest.fixture
def open_page(
    browser: Any, origins: Origins, api: ApiServer, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], ProbePage]]:
    """``open_page("allowed" | "refused")``: the probe page in a fresh browser context.

    A context per page: its own cookies and its own preflight cache. Each page is
    screenshotted at teardown, failed tests included.
    """
    opened: list[tuple[str, Any, ProbePage]] = []

    def open_(which: str) -> ProbePage:
        origin = getattr(origins, which)
        context = browser.new_context(viewport={"width": 1100, "height": 700})
        page = context.new_page()
        probe = ProbePage(page=page, origin=origin)
        page.on("console", lambda message: probe.console.append(message.text))
        page.goto(f"{origin}/index.html")
        page.wait_for_function("typeof window.probe === 'function'")
        opened.append((which, context, probe))
        return probe

    yield open_
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    for which, context, probe in opened:
        try:
            with contextlib.suppress(PlaywrightError):  # no console listing: still take the shot
                probe.page.evaluate(
                    "lines => { document.getElementById('console').textContent = lines.join('\\n'); }",
                    probe.console,
                )
            probe.page.screenshot(path=str(ARTEFACTS / f"{name}-{which}.png"), full_page=True)
        finally:
            context.close()
