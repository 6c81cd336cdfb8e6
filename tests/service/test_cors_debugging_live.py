"""CORS debugging aids through a real uvicorn process: the refusal's reason in the access
line and in /metrics, the debug header for the debug origin only."""

from __future__ import annotations

import json
import re
import subprocess

import httpx

from tests.helpers import PYTHON
from tests.service.conftest import ALLOWED

DEBUG = "http://127.0.0.1:5173"  # the test page's origin, allowed and debugged


def test_a_refused_preflight_in_the_log_and_the_metric(api_server):
    server = api_server({"APP_ACCESS_LOG": "true", "APP_CORS_DEBUG_ORIGINS": ""})
    refused = httpx.options(
        f"{server.url}/items/1",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "PUT",
            "access-control-request-headers": 'content-type, x-secret\\"}',
            "x-request-id": "cors-refused-1",
        },
    )
    assert refused.status_code == 400
    assert "gatehouse-cors-debug" not in refused.headers  # no debug origins: never
    metrics = httpx.get(f"{server.url}/metrics").text
    server.stop()

    counted = re.search(
        r'^gatehouse_cors_rejections_total\{reason="header_not_allowed"\} (\S+)$', metrics, re.M
    )
    assert counted is not None and float(counted.group(1)) == 1.0
    assert 'gatehouse_cors_rejections_total{reason="origin_not_listed"} 0.0' in metrics

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    entry = next(line for line in lines if line.get("request_id") == "cors-refused-1")
    assert entry["status"] == 400
    assert entry["cors_refused"] == "header_not_allowed"
    # What the client wrote, escaped: no quote, brace or backslash of its own in the log.
    assert entry["cors_refused_header"] == "x-secret\\x5c\\x22\\x7d"


def test_the_debug_header_for_the_debug_origin_only(api_server):
    server = api_server(
        {"APP_ALLOWED_ORIGINS": f"{ALLOWED},{DEBUG}", "APP_CORS_DEBUG_ORIGINS": DEBUG}
    )
    debugged = httpx.get(f"{server.url}/items/1", headers={"origin": DEBUG})
    assert debugged.headers["gatehouse-cors-debug"].startswith("allowed; methods=")
    assert "Gatehouse-CORS-Debug" in debugged.headers["access-control-expose-headers"]
    asked_patch = httpx.options(
        f"{server.url}/items/1",
        headers={"origin": DEBUG, "access-control-request-method": "PATCH"},
    )
    assert asked_patch.status_code == 400
    assert asked_patch.headers["gatehouse-cors-debug"].startswith(
        "refused=method_not_allowed; method=PATCH; "
    )
    for origin in (ALLOWED, "https://evil.example"):
        other = httpx.get(f"{server.url}/items/1", headers={"origin": origin})
        assert "gatehouse-cors-debug" not in other.headers
        assert "Gatehouse-CORS-Debug" not in other.headers.get("access-control-expose-headers", "")


def test_a_debug_origin_off_the_allowlist_stops_start_up():
    result = subprocess.run(
        [PYTHON, "-m", "gatehouse"],
        env={
            "PATH": "/usr/bin:/bin",
            "APP_ALLOWED_ORIGINS": ALLOWED,
            "APP_CORS_DEBUG_ORIGINS": "https://other.example",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "APP_CORS_DEBUG_ORIGINS" in line and "https://other.example" in line
