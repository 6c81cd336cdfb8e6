"""What the browser tests share beyond fixtures: the probe page and API read-outs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ApiServer, wait_until
from tests.jwt_keys import client_authorization

SEARCH_LIMIT = 3  # APP_RATE_LIMIT_SEARCH of the layer's API, per minute


@dataclass
class ProbePage:
    """A probe page open on one origin, with the console messages it logged."""

    page: Any
    origin: str
    console: list[str] = field(default_factory=list)

    def fetch(self, label: str, url: str, init: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(
            "([label, url, init]) => window.probe(label, url, init)", [label, url, init or {}]
        )
        return result

    def submit_form(self, label: str, action: str, enctype: str, fields: dict[str, str]) -> None:
        self.page.evaluate(
            "([label, action, enctype, fields]) => window.submitForm(label, action, enctype, fields)",
            [label, action, enctype, fields],
        )

    def wait_for_console(self, fragment: str, timeout: float = 5.0) -> str:
        """The first console message containing ``fragment`` (they may lag the fetch)."""
        deadline = timeout * 1000
        waited = 0
        while True:
            for message in self.console:
                if fragment in message:
                    return message
            if waited >= deadline:
                raise AssertionError(f"no console message with {fragment!r}: {self.console}")
            self.page.wait_for_timeout(50)  # lets Playwright deliver pending events
            waited += 50


def request_count(
    api: ApiServer, method: str, status: str | None = None, route: str | None = None
) -> float:
    """Requests the API answered (from its /metrics), by method, status and route."""
    text = httpx.get(f"{api.url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "gatehouse_http_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            labels = sample.labels
            if (
                labels.get("method") == method
                and status in (None, labels.get("status"))
                and route in (None, labels.get("route"))
            ):
                total += sample.value
    return total


def wait_for_requests(api: ApiServer, method: str, at_least: float) -> None:
    wait_until(
        lambda: request_count(api, method) >= at_least,
        timeout=10,
        what=f"the API to answer {at_least:g} {method} requests",
    )


def search_names(api: ApiServer, name: str) -> list[str]:
    """Item names matching ``name``, asked with a credential of its own.

    A token the tests' identity provider signed for a fresh subject is a fresh rate-limit
    budget, so checking never spends the budget of the browser (which shares 127.0.0.1
    with the test).
    """
    response = httpx.get(
        f"{api.url}/search",
        params={"q": name},
        headers={"Authorization": client_authorization(f"check-{uuid.uuid4().hex}")},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return [item["name"] for item in response.json()["results"]]
