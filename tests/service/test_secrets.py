"""No error, log line or metric ever contains the Redis password, in any URL form.

A real ``python -m gatehouse`` for each form, pointed at a loopback port where nothing
listens, so every connection fails and every failure path logs: start-up checks,
the first checks, the fallback, readiness, the metrics. Then everything the process
said and served is searched for the password, raw and percent-encoded.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import pytest

from tests.helpers import PYTHON, free_port

PASSWORD = "Hunter2-s3cret+x"
USER = "gatehouse-user"


def _closed_port() -> int:
    return free_port()  # free: nothing listens there


URL_FORMS = {
    "redis": "redis://:{pw}@127.0.0.1:{port}/0",
    "redis with user": "redis://{user}:{pw}@127.0.0.1:{port}/1",
    "rediss": "rediss://:{pw}@127.0.0.1:{port}",
    "sentinel": "redis+sentinel://:{pw}@127.0.0.1:{port},127.0.0.1:{port2}/mymaster",
    "cluster": "redis+cluster://:{pw}@127.0.0.1:{port},127.0.0.1:{port2}",
}


def _url(form: str, password: str) -> str:
    return URL_FORMS[form].format(pw=password, user=USER, port=_closed_port(), port2=_closed_port())


def _secrets(password: str) -> list[str]:
    return [password, quote(password, safe=""), PASSWORD]


@pytest.mark.parametrize("form", list(URL_FORMS))
def test_a_failing_redis_never_shows_its_password(api_server, form: str) -> None:
    server = api_server(
        {
            "APP_REDIS_URL": _url(form, PASSWORD),
            "APP_REDIS_TIMEOUT": "0.1",
            "APP_REDIS_RETRY_INTERVAL": "0.2",
            "APP_LOG_LEVEL": "debug",
            "APP_ACCESS_LOG": "true",
        }
    )
    served = []
    for _ in range(5):
        served.append(httpx.get(f"{server.url}/search?q=x", timeout=10).text)
    served.append(httpx.get(f"{server.url}/readyz", timeout=10).text)
    served.append(httpx.get(f"{server.url}/metrics", timeout=10).text)
    server.stop()
    said = server.log()
    assert "ERROR" in said.upper() or "unavailable" in said  # the failures were logged
    for text in [*served, said]:
        for secret in _secrets(PASSWORD):
            assert secret not in text


def _broken(form: str, breakage: str) -> str:
    url = _url(form, PASSWORD)
    if breakage == "port":
        return url.replace("127.0.0.1:", "127.0.0.1:99999x", 1)
    if breakage == "db":
        return url.rstrip("/") + ("/x/y" if "sentinel" in form else "/x")
    return url + "?password=" + PASSWORD  # redis-py would read it: it is a secret too


def _start(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gatehouse"],
        env={"PATH": "/usr/bin:/bin", "APP_REDIS_URL": url, "APP_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_malformed_url_stops_start_up_with_one_line_without_its_password() -> None:
    cases = [(form, breakage) for form in URL_FORMS for breakage in ("port", "db", "query")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: _start(_broken(*case)), cases))
    for case, result in zip(cases, results, strict=True):
        assert result.returncode == 2, case
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (case, result.stderr)
        assert lines[0].startswith("gatehouse: invalid configuration: APP_REDIS_URL = "), case
        for secret in _secrets(PASSWORD):
            assert secret not in result.stderr + result.stdout, case
