"""APP_METRICS_PORT: /healthz, /readyz and /metrics on their own port, never on the served one.

The chart's Service and ingress know only the serving port, so what is not served there
cannot be reached from outside, whatever Host or path a client tries.
"""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from tests.helpers import PYTHON, free_port

INFRASTRUCTURE = ("/healthz", "/readyz", "/metrics")


@pytest.fixture
def split_server(api_server):
    metrics_port = free_port("127.0.0.1")
    server = api_server({"APP_METRICS_PORT": str(metrics_port)})
    return server, f"http://127.0.0.1:{metrics_port}"


def test_the_management_port_serves_probes_and_metrics(split_server) -> None:
    server, management = split_server
    assert httpx.get(f"{server.url}/search?q=x").status_code == 200

    live = httpx.get(f"{management}/healthz")
    ready = httpx.get(f"{management}/readyz")
    scrape = httpx.get(f"{management}/metrics")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    # The request served on the other port is counted in the one registry.
    assert 'gatehouse_http_requests_total{method="GET",route="/search",status="200"} 1.0' in (
        scrape.text
    )
    for response in (live, ready, scrape):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"


def test_the_management_port_serves_nothing_else(split_server) -> None:
    _, management = split_server
    other = httpx.get(f"{management}/search?q=x")
    assert other.status_code == 404
    assert other.headers["content-type"] == "application/problem+json"
    posted = httpx.post(f"{management}/healthz", content=b"x")
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    head = httpx.head(f"{management}/metrics")
    assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize("path", INFRASTRUCTURE)
@pytest.mark.parametrize("host", [None, "localhost", "10.0.0.1:9090", "evil.example"])
def test_the_serving_port_does_not_answer_them(split_server, path: str, host: str | None) -> None:
    server, _ = split_server
    headers = {"host": host} if host else {}
    response = httpx.get(f"{server.url}{path}", headers=headers)
    assert response.status_code == 404
    assert "gatehouse_" not in response.text


def test_without_a_management_port_they_stay_on_the_serving_port(api_server) -> None:
    server = api_server({})
    for path in INFRASTRUCTURE:
        assert httpx.get(f"{server.url}{path}").status_code == 200


def test_a_management_port_in_use_stops_start_up_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [PYTHON, "-m", "gatehouse"],
            env={
                "APP_HOST": "127.0.0.1",
                "APP_PORT": str(free_port()),
                "APP_METRICS_PORT": str(port),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"gatehouse: cannot listen on 127.0.0.1:{port} (APP_METRICS_PORT)")
