"""``rediss://``: a TLS-only redis-server with a certificate made here, both clients.

The service verifies the server through APP_REDIS_CA_FILE (host name or IP address
included). A certificate the configured CA did not sign stops start-up with one line;
a TLS Redis that is merely not there yet does not.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import PYTHON, ApiServer, free_port, wait_for_fresh_window
from tests.topologies.load import burst, redis_key
from tests.topologies.servers import TlsRedis

CLIENTS = ["pipelined", "redis-py"]


@pytest.fixture
def tls_redis(tmp_path: Path, certificates: dict[str, Path]):
    server = TlsRedis(
        tmp_path / "tls", certificates["cert"], certificates["key"], certificates["ca"]
    )
    server.start()
    yield server
    server.kill()


@pytest.mark.parametrize("client", CLIENTS)
def test_limit_shared_over_tls(tls_redis, certificates, api_server, client):
    env = {
        "APP_REDIS_URL": tls_redis.url,
        "APP_REDIS_CA_FILE": str(certificates["ca"]),
        "APP_REDIS_CLIENT": client,
        "APP_RATE_LIMIT_SEARCH": "5/minute",
        "APP_RATE_LIMIT_ALGORITHM": "fixed",  # the count read from Redis: one integer
        "APP_RATE_LIMIT_FAILURE_MODE": "closed",  # a TLS failure would show as 503
        "APP_REPLICAS": "2",
    }
    wait_for_fresh_window(60, needed=10)
    replicas = [api_server(env) for _ in range(2)]
    statuses = asyncio.run(burst([r.url for r in replicas], ["tls-caller"], 12))
    assert statuses == {"tls-caller": Counter({200: 5, 429: 7})}
    assert int(tls_redis.client().get(redis_key("tls-caller", window="5/60"))) == 5


def start_and_wait(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    server = ApiServer(env)
    return subprocess.run(
        [PYTHON, "-m", "gatehouse"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_an_untrusted_certificate_stops_start_up(tls_redis, certificates, client):
    result = start_and_wait(
        {
            "APP_REDIS_URL": tls_redis.url,
            "APP_REDIS_CA_FILE": str(certificates["other_ca"]),  # did not sign the server's
            "APP_REDIS_CLIENT": client,
        }
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gatehouse: APP_REDIS_URL")
    assert "APP_REDIS_CA_FILE" in lines[0] and "not trusted" in lines[0]
    assert "Traceback" not in result.stderr


def test_an_unreachable_tls_redis_does_not_stop_start_up(api_server, certificates):
    server = api_server(
        {
            "APP_REDIS_URL": f"rediss://127.0.0.1:{free_port()}/0",  # nothing listens there
            "APP_REDIS_CA_FILE": str(certificates["ca"]),
        }
    )
    import httpx

    assert httpx.get(f"{server.url}/search?q=x").status_code == 200  # mode open: local share
    assert "not reachable at start-up" in server.log()
