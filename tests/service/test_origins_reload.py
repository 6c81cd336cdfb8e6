"""Origins from a mounted ConfigMap, changed under a running server the way the kubelet does it."""

from __future__ import annotations

import json

import httpx

from tests.helpers import wait_until
from tests.kubelet_volume import ConfigMapVolume

FIRST = "https://first.example"
SECOND = "https://second.example"


def allowed(url: str, origin: str) -> bool:
    response = httpx.get(f"{url}/healthz", headers={"origin": origin})
    return response.headers.get("access-control-allow-origin") == origin


def test_a_changed_configmap_applies_without_a_restart(api_server, tmp_path):
    volume = ConfigMapVolume(tmp_path / "config", {"APP_ALLOWED_ORIGINS": FIRST})
    server = api_server(
        {
            "APP_ALLOWED_ORIGINS": "https://from-the-variable.example",
            "APP_ALLOWED_ORIGINS_FILE": str(volume.path("APP_ALLOWED_ORIGINS")),
            "APP_CONFIG_RELOAD_INTERVAL": "0.2",
        }
    )
    pid = server.process.pid
    # The file wins over the variable at start-up.
    assert allowed(server.url, FIRST)
    assert not allowed(server.url, "https://from-the-variable.example")

    volume.update({"APP_ALLOWED_ORIGINS": f'["{SECOND}"]'})
    wait_until(lambda: allowed(server.url, SECOND), timeout=5, what="the new origin")
    assert not allowed(server.url, FIRST)
    assert server.process.pid == pid and server.process.running()

    # An invalid update keeps the last good allowlist, says so once, and is counted.
    volume.update({"APP_ALLOWED_ORIGINS": "https://bad.example/path"})
    wait_until(
        lambda: (
            'gatehouse_config_reloads_total{result="rejected"} 1.0'
            in httpx.get(f"{server.url}/metrics").text
        ),
        timeout=5,
        what="the rejection to be counted",
    )
    assert allowed(server.url, SECOND)
    assert not allowed(server.url, "https://bad.example")
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'gatehouse_config_reloads_total{result="applied"} 1.0' in metrics

    server.stop()
    errors = [
        json.loads(line)
        for line in server.log().splitlines()
        if line.startswith("{") and "rejected" in line
    ]
    assert len(errors) == 1
    assert errors[0]["level"] == "error"
    assert "APP_ALLOWED_ORIGINS" in errors[0]["message"]


def test_an_unreadable_or_bad_file_stops_start_up_with_one_line(tmp_path):
    import subprocess

    from tests.helpers import PYTHON

    bad = tmp_path / "origins"
    bad.write_text("null")
    for path in (bad, tmp_path / "missing"):
        result = subprocess.run(
            [PYTHON, "-m", "gatehouse"],
            env={"PATH": "/usr/bin:/bin", "APP_ALLOWED_ORIGINS_FILE": str(path)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "APP_ALLOWED_ORIGINS_FILE" in lines[0]
