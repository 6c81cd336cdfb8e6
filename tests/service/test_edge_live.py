"""The edge through a real uvicorn process: what a browser or a client on the network sees."""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from tests.helpers import PYTHON, free_port
from tests.image import chartpod
from tests.service.conftest import ALLOWED

HOSTILE_ORIGINS = [
    "null",
    "https://app.example.com.evil.net",
    "http://app.example.com",
    "https://app.example.com:444",
    "https://app.example.com/",
]


@pytest.fixture
def server(api_server):
    # Trusts only 127.0.10.0/24 as its proxy; the test client connects from 127.0.0.1.
    return api_server(
        {
            "FORWARDED_ALLOW_IPS": "127.0.10.0/24",
            "APP_TRUSTED_HOSTS": "api.example.com",
            "APP_TEST_ROUTES_ENABLED": "true",
        }
    )


def test_no_server_header_and_the_security_headers(server):
    response = httpx.get(f"{server.url}/search?q=a", headers={"host": "api.example.com"})
    assert response.status_code == 200
    assert "server" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"
    assert (
        response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    )


def test_allowed_origin(server):
    response = httpx.get(
        f"{server.url}/search?q=a", headers={"host": "api.example.com", "origin": ALLOWED}
    )
    assert response.headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
def test_hostile_origins(server, origin):
    headers = {"host": "api.example.com", "origin": origin}
    simple = httpx.get(f"{server.url}/search?q=a", headers=headers)
    preflight = httpx.options(
        f"{server.url}/items", headers={**headers, "access-control-request-method": "POST"}
    )
    assert "access-control-allow-origin" not in simple.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.headers["x-content-type-options"] == "nosniff"


def test_allowed_preflight_then_the_real_request(server):
    base = {"host": "api.example.com", "origin": ALLOWED}
    preflight = httpx.options(
        f"{server.url}/items/1",
        headers={
            **base,
            "access-control-request-method": "PUT",
            "access-control-request-headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    created = httpx.post(f"{server.url}/items", json={"name": "lamp"}, headers=base)
    assert created.status_code == 201
    replaced = httpx.put(
        f"{server.url}/items/{created.json()['id']}", json={"name": "desk"}, headers=base
    )
    assert replaced.status_code == 200
    assert replaced.headers["access-control-allow-origin"] == ALLOWED


def test_errors_carry_cors_and_security_headers(server):
    headers = {"host": "api.example.com", "origin": ALLOWED}
    for path, status in (("/test/error", 500), ("/nope", 404), ("/search", 422)):
        response = httpx.get(f"{server.url}{path}", headers=headers)
        assert response.status_code == status
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["x-content-type-options"] == "nosniff"


def test_host_spoofing_is_refused(server):
    response = httpx.get(
        f"{server.url}/search?q=a", headers={"host": "evil.example", "origin": ALLOWED}
    )
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == ALLOWED


def test_probes_with_a_pod_ip_host(server):
    for path in ("/healthz", "/readyz"):
        response = httpx.get(f"{server.url}{path}", headers={"host": "10.244.0.12:8000"})
        assert response.status_code == 200


def test_spoofed_forwarded_for_from_an_untrusted_peer(server):
    response = httpx.get(
        f"{server.url}/whoami",
        headers={
            "host": "api.example.com",
            "x-forwarded-for": "1.2.3.4",
            "x-forwarded-proto": "https",
        },
    )
    body = response.json()
    assert body["client_ip"] == "127.0.0.1"
    assert body["scheme"] == "http"
    assert "strict-transport-security" not in response.headers


def test_forwarded_for_from_the_trusted_proxy(server):
    transport = httpx.HTTPTransport(local_address="127.0.10.1")
    with httpx.Client(transport=transport) as client:
        response = client.get(
            f"{server.url}/whoami",
            headers={
                "host": "api.example.com",
                "x-forwarded-for": "198.51.100.4",
                "x-forwarded-proto": "https",
            },
        )
    body = response.json()
    assert (body["client_ip"], body["scheme"]) == ("198.51.100.4", "https")
    # https as the trusted proxy says: HSTS with APP_HSTS_MAX_AGE's default, two years.
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


def test_request_id_is_returned_and_generated(server):
    given = httpx.get(f"{server.url}/healthz", headers={"x-request-id": "abc-123"})
    made = httpx.get(f"{server.url}/healthz")
    made_again = httpx.get(f"{server.url}/healthz")
    hostile = httpx.get(f"{server.url}/healthz", headers={"x-request-id": "a b\tc"})
    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{26}", made.headers["x-request-id"])
    assert made.headers["x-request-id"] != made_again.headers["x-request-id"]
    # Not a plain token, so replaced by one the service made.
    assert re.fullmatch(r"[0-9a-f]{26}", hostile.headers["x-request-id"])


def test_metrics_by_route_template(server):
    for item in (1, 2, 3):
        httpx.get(f"{server.url}/items/{item}", headers={"host": "api.example.com"})
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        'gatehouse_http_requests_total{method="GET",route="/items/{item_id}",status="404"} 3.0'
        in text
    )
    assert "/items/1" not in text
    assert (
        'gatehouse_ratelimit_decisions_total{decision="allowed",route="/items/{item_id}"} 3.0'
        in text
    )


def test_access_log_is_json_with_the_request_fields(api_server):
    server = api_server({"APP_ACCESS_LOG": "true"})
    httpx.get(f"{server.url}/items/7", headers={"x-request-id": "trace-7"})
    server.stop()
    import json

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "trace-7")
    assert entry["route"] == "/items/{item_id}"
    assert entry["status"] == 404
    assert entry["method"] == "GET"
    assert entry["client_ip"] == "127.0.0.1"
    assert entry["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APP_ALLOWED_ORIGINS", "*"),
        ("APP_ALLOWED_ORIGINS", "https://app.example.com/"),
        ("APP_RATE_LIMIT_SEARCH", "lots"),
        ("APP_RATE_LIMIT_FAILURE_MODE", "maybe"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.0/40"),
        ("FORWARDED_ALLOW_IPS", "*"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line(name, value):
    result = subprocess.run(
        [PYTHON, "-m", "gatehouse"], env={"PATH": "/usr/bin:/bin", name: value},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert name in lines[0] and value in lines[0]


# Proxy trust the service refuses, whichever way it starts (the chart's schema too).
BAD_PROXY_TRUST = ["*", "0.0.0.0/0", "0.0.0.0/1", "::/0", "10.64.0.1/16", "10.0.0.0/40"]


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env={"PATH": "/usr/bin:/bin", "APP_HOST": "127.0.0.1", "APP_PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FORWARDED_ALLOW_IPS", "0.0.0.0/1"),
        ("FORWARDED_ALLOW_IPS", "*"),
        ("APP_ALLOWED_ORIGINS", "null"),
        ("APP_RATE_LIMIT_SEARCH", "lots"),
    ],
)
def test_a_bad_value_under_uvicorn_factory_stops_before_serving(name, value):
    # `uvicorn --factory gatehouse.service:create_app` (the benchmarks) calls the factory in
    # Config.load(), before it binds a socket or logs "Started server process". It catches
    # only a TypeError from a factory, so the ConfigError ends the process uncaught: exit
    # status 1 and a traceback whose last line carries the same message that
    # `python -m gatehouse` prints as its one line.
    factory = _run(
        [PYTHON, "-m", "uvicorn", "--factory", "gatehouse.service:create_app",
         "--host", "127.0.0.1", "--port", str(free_port())],
        {name: value},
    )  # fmt: skip
    direct = _run([PYTHON, "-m", "gatehouse"], {name: value})
    assert direct.returncode == 2, direct.stderr
    (line,) = direct.stderr.splitlines()
    message = line.removeprefix("gatehouse: ")
    assert message.startswith(f"invalid configuration: {name} = "), line

    assert factory.returncode == 1, factory.stderr[-2000:]
    lines = factory.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", factory.stderr[-2000:]
    assert lines[-1] == f"gatehouse.settings.errors.ConfigError: {message}"
    # uvicorn logs these after loading the app, the second once it listens: neither came.
    assert "Started server process" not in factory.stderr
    assert "Uvicorn running" not in factory.stderr


@pytest.fixture(scope="module")
def rendered_command() -> list[str]:
    """The chart's API command and args (k8s/values-local.yaml), on a loopback port."""
    pod = chartpod.from_chart(chartpod.render())
    argv = pod.argv_for("127.0.0.1", free_port())
    assert argv[:3] == ["python", "-m", "gatehouse"], argv
    return [PYTHON, *argv[1:]]  # the image's python is this venv's here


@pytest.mark.parametrize("value", BAD_PROXY_TRUST)
def test_the_charts_command_refuses_proxy_trust_like_python_m_gatehouse(rendered_command, value):
    env = {"FORWARDED_ALLOW_IPS": value}
    direct = _run([PYTHON, "-m", "gatehouse"], env)
    chart = _run(rendered_command, env)
    assert (direct.returncode, chart.returncode) == (2, 2), chart.stderr[-2000:]
    (line,) = direct.stderr.splitlines()
    assert line.startswith("gatehouse: invalid configuration: FORWARDED_ALLOW_IPS = "), line
    assert value in line
    assert chart.stderr == direct.stderr
