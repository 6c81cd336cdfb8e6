"""What a page can read from the API through the cluster's ingress controller, as
Chromium enforces CORS: Debian's Chromium on the host, the probe page of tests/browser
served from each release's allowed origin, the API reached at Traefik's NodePort.

Chromium resolves the names itself (--host-resolver-rules): api-<route>.ctl.localtest.me
to the node's address (Traefik routes on that Host), app-<route>.ctl.localtest.me to
127.0.0.1 (the page). Screenshots of every page go to tests/artefacts/browser/.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cluster.layout import NODE_IP
from playwright.sync_api import Error as PlaywrightError

from tests.browser.conftest import ARTEFACTS, MISSING, chromium, launched_chromium
from tests.browser.support import ProbePage
from tests.k8s.conftest import Cluster
from tests.k8s.controller_releases import (
    DEFAULT_LIMIT,
    DOMAIN,
    ROUTES,
    Controller,
    Routed,
    answered_since,
    answers_by_pod,
    host_address_seen_by_traefik,
)

pytestmark = pytest.mark.k8s

CORS_BLOCKED = "has been blocked by CORS policy"
FAILED = "TypeError: Failed to fetch"


@pytest.fixture(scope="module")
def controller_browser(controller: Controller) -> Iterator[Any]:
    path = chromium()
    if path is None:
        pytest.skip(MISSING)
    rules = [f"MAP {r.host} {NODE_IP}" for r in controller.routed.values()]
    rules += [f"MAP app-{route}.{DOMAIN} 127.0.0.1" for route in ROUTES]
    # No proxy from the environment: the page and the API are both on this machine.
    extra = (f"--host-resolver-rules={', '.join(rules)}", "--no-proxy-server")
    with launched_chromium(path, extra) as browser:
        yield browser


@pytest.fixture
def open_page(
    controller_browser: Any, controller: Controller, request: pytest.FixtureRequest
) -> Iterator[Callable[[Routed], ProbePage]]:
    """``open_page(routed)``: the probe page on that release's allowed origin, in a fresh
    browser context (its own preflight cache); screenshotted at teardown."""
    opened: list[tuple[str, Any, ProbePage]] = []

    def open_(routed: Routed) -> ProbePage:
        context = controller_browser.new_context(viewport={"width": 1100, "height": 700})
        page = context.new_page()
        probe = ProbePage(page=page, origin=routed.origin)
        page.on("console", lambda message: probe.console.append(message.text))
        page.goto(f"{routed.origin}/index.html")
        page.wait_for_function("typeof window.probe === 'function'")
        opened.append((routed.route, context, probe))
        return probe

    yield open_
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    for route, context, probe in opened:
        try:
            with contextlib.suppress(PlaywrightError):
                probe.page.evaluate(
                    "lines => { document.getElementById('console').textContent = lines.join('\\n'); }",
                    probe.console,
                )
            shot = ARTEFACTS / f"controller-{name}-page-{route}.png"
            probe.page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()


@pytest.fixture(params=ROUTES)
def routed(request: pytest.FixtureRequest, controller: Controller) -> Routed:
    return controller.routed[request.param]


def test_allowed_origin_reads_the_answer(open_page, routed: Routed) -> None:
    page = open_page(routed)
    result = page.fetch("whoami through Traefik", f"{routed.browser_url}/whoami",
                        {"credentials": "include"})  # fmt: skip

    assert result["error"] is None, result
    assert (result["type"], result["status"]) == ("cors", 200), result
    body = result["body"]
    # The browser is one more host client: Traefik sees it at the bridge's address.
    assert body["client_ip"] == host_address_seen_by_traefik(), body
    assert body["host"] == routed.browser_url.removeprefix("http://"), body
    headers = result["headers"]  # only what CORS lets the page read
    assert headers["x-ratelimit-limit"] == str(DEFAULT_LIMIT), headers  # exposed to the page
    assert re.fullmatch(r"[0-9a-f]{26}", headers["x-request-id"]), headers


def test_other_namespace_origin_is_refused(
    open_page, routed: Routed, controller: Controller
) -> None:
    page = open_page(controller.other(routed))
    result = page.fetch("whoami of the other release", f"{routed.browser_url}/whoami",
                        {"credentials": "include"})  # fmt: skip

    assert result["error"] == FAILED, result
    message = page.wait_for_console(CORS_BLOCKED)
    assert f"from origin '{page.origin}'" in message, message
    # The answer came (through Traefik) but named no origin: the browser withheld it.
    assert "No 'Access-Control-Allow-Origin' header" in message, message


def test_preflighted_put_passes_through_traefik(
    open_page, routed: Routed, cluster: Cluster
) -> None:
    before = answers_by_pod(cluster, routed.release)
    page = open_page(routed)
    result = page.fetch(
        "replace (PUT, JSON: preflighted)",
        f"{routed.browser_url}/items/987654",
        {
            "method": "PUT",
            "credentials": "include",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"name": "lamp", "quantity": 1}),
        },
    )

    # The PUT left the browser only because its preflight passed; its 404 is readable.
    assert result["error"] is None, result
    assert (result["type"], result["status"]) == ("cors", 404), result
    assert result["body"]["detail"] == "no such item", result
    after = answers_by_pod(cluster, routed.release)
    preflights = answered_since(before, after, "OPTIONS")
    puts = answered_since(before, after, "PUT")
    assert sum(sum(s.values()) for s in preflights.values()) == 1, preflights
    assert sum(s["200"] for s in preflights.values()) == 1, preflights
    assert sum(s["404"] for s in puts.values()) == 1, puts


def test_429_is_readable_with_retry_after(open_page, routed: Routed) -> None:
    page = open_page(routed)
    limit = routed.release.search_limit
    # Counted by this host's address (an unverified token never gets a budget of its own),
    # in a trailing window other tests may have spent from: the first answer says what is
    # left. The Authorization header makes every call preflighted.
    init = {"credentials": "include", "headers": {"Authorization": f"Bearer {uuid.uuid4().hex}"}}
    url = f"{routed.browser_url}/search?q=lamp"
    results = [page.fetch("search 1", url, init)]
    left = 0
    if results[0]["status"] == 200:
        left = int(results[0]["headers"]["x-ratelimit-remaining"])
        assert 0 <= left < limit, results[0]["headers"]
        results += [page.fetch(f"search {n}", url, init) for n in range(2, left + 3)]

    assert [r["status"] for r in results] == [200] * (len(results) - 1) + [429], results
    refused = results[-1]
    assert refused["error"] is None and refused["type"] == "cors", refused
    retry_after = refused["headers"]["retry-after"]  # exposed to the page
    assert 1 <= int(retry_after) <= 60, refused["headers"]
    assert refused["headers"]["ratelimit"] == f'"search";r=0;t={retry_after}', refused["headers"]
    assert refused["body"]["status"] == 429, refused
