"""Every variable of the README's configuration table, with bad values.

``python -m gatehouse`` must stop with status 2 and exactly one line on stderr that names
the variable (and the value, where showing it is sensible). Where the chart has the same
setting, its values schema must refuse the same value at ``helm template`` time, naming
the field. One table row pairs the two.

Not in the table: ``APP_ENVIRONMENT`` and ``APP_REDIS_PASSWORD`` (any string is a valid
value for the service; the chart's ``config.environment`` enum is covered by the chart
layer).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PYTHON, ROOT, free_port

HELM = ROOT / "scripts" / "helm"
CHART = ROOT / "charts" / "gatehouse"
DEEP_JSON_LIST = "[" * 5000


@dataclass(frozen=True)
class Row:
    variable: str
    value: str
    chart: tuple[str, Any] | None = None  # (--set-json path, JSON value) or None
    show_value: bool = True  # the line must also quote the value
    env: tuple[tuple[str, str], ...] = ()  # other variables the case needs
    chart_extra: tuple[str, ...] = ()  # other --set-json pairs the chart needs
    xfail: str | None = None  # a defect for the lead to decide on

    @property
    def id(self) -> str:
        shown = self.value if len(self.value) <= 30 else f"{self.value[:12]}...{len(self.value)}"
        return f"{self.variable}={shown!r}"


def origins(value: str) -> tuple[str, Any]:
    return ("config.allowedOrigins", [value])


ROWS: list[Row] = [
    Row("APP_ALLOWED_ORIGINS", "https://a.example/", origins("https://a.example/")),
    Row("APP_ALLOWED_ORIGINS", "https://a.example/app", origins("https://a.example/app")),
    Row("APP_ALLOWED_ORIGINS", "a.example", origins("a.example")),
    Row("APP_ALLOWED_ORIGINS", "ftp://a.example", origins("ftp://a.example")),
    Row("APP_ALLOWED_ORIGINS", "null", origins("null")),
    Row("APP_ALLOWED_ORIGINS", "https://user@a.example", origins("https://user@a.example")),
    Row("APP_ALLOWED_ORIGINS", "*", origins("*"), show_value=False),
    Row("APP_ALLOWED_ORIGINS", '["https://a.example", 1]', ("config.allowedOrigins", ["ok", 1])),
    # The chart's pattern allows any 1-5 digit port: it renders what the service refuses.
    Row("APP_ALLOWED_ORIGINS", "https://a.example:99999", origins("https://a.example:99999")),
    # json.loads raises RecursionError, which nothing turns into a ConfigError: a traceback.
    Row("APP_ALLOWED_ORIGINS", DEEP_JSON_LIST, show_value=False),
    # The message repeats the value unescaped ("write https://a.example\nb.example"): two lines.
    Row(
        "APP_ALLOWED_ORIGINS",
        "a.example\nb.example",
        origins("a.example\nb.example"),
        show_value=False,
    ),
    # The line names the variable and the reason, not the path.
    Row("APP_ALLOWED_ORIGINS_FILE", "/nonexistent/origins", show_value=False),
    Row("APP_ALLOWED_ORIGINS_FILE", "/", show_value=False),
    Row("APP_CONFIG_RELOAD_INTERVAL", "0"),
    Row("APP_CONFIG_RELOAD_INTERVAL", "301"),
    Row("APP_CONFIG_RELOAD_INTERVAL", "nan"),
    Row("APP_CONFIG_RELOAD_INTERVAL", "soon"),
    Row("APP_ALLOW_CREDENTIALS", "maybe"),
    Row("APP_CORS_ALLOW_METHODS", "GET,P0ST"),
    Row("APP_CORS_ALLOW_METHODS", "GET;POST"),
    Row(
        "APP_CORS_ALLOW_HEADERS",
        "Content-Type,X-€",
    ),
    Row("APP_CORS_MAX_AGE", "7201", ("config.corsMaxAge", 7201)),
    Row("APP_CORS_MAX_AGE", "-1", ("config.corsMaxAge", -1)),
    Row("APP_CORS_MAX_AGE", "ten", ("config.corsMaxAge", "ten")),
    Row(
        "APP_TRUSTED_HOSTS",
        "https://api.example.com",
        ("config.trustedHosts", ["https://api.example.com"]),
    ),
    Row("APP_TRUSTED_HOSTS", "api.example.com/v1", ("config.trustedHosts", ["api.example.com/v1"])),
    Row("APP_TRUSTED_HOSTS", "api.*.com", ("config.trustedHosts", ["api.*.com"])),
    Row(
        "APP_TRUSTED_HOSTS",
        ",",
        ("config.trustedHosts", []),
        show_value=False,
    ),
    Row("APP_HTTPS_REDIRECT", "sometimes", ("config.httpsRedirect", "sometimes")),
    Row("APP_REFERRER_POLICY", "unsafe-url", ("config.referrerPolicy", "unsafe-url")),
    Row("APP_HSTS_MAX_AGE", "-1"),
    Row("APP_HSTS_MAX_AGE", "1y"),
    Row("APP_DOCS_ENABLED", "perhaps", ("config.docsEnabled", "perhaps")),
    Row("APP_TEST_ROUTES_ENABLED", "2"),
    Row(
        "APP_REDIS_URL",
        "http://redis:6379",
        ("externalRedis.url", "http://redis:6379"),
        chart_extra=("redis.enabled=false",),
    ),
    Row(
        "APP_REDIS_URL",
        "redis://",
        ("externalRedis.url", "redis://"),
        chart_extra=("redis.enabled=false",),
    ),
    Row("APP_REDIS_CLIENT", "hiredis"),
    Row(
        "APP_REDIS_CA_FILE",
        "/nonexistent/ca.pem",
        env=(("APP_REDIS_URL", "rediss://127.0.0.1:1/0"),),
    ),
    Row("APP_REDIS_TIMEOUT", "0", ("config.redisTimeout", 0)),
    Row("APP_REDIS_TIMEOUT", "11", ("config.redisTimeout", 11)),
    Row("APP_REDIS_TIMEOUT", "fast", ("config.redisTimeout", "fast")),
    Row("APP_REDIS_RETRY_INTERVAL", "0"),
    Row("APP_REDIS_RETRY_INTERVAL", "61"),
    Row("APP_RATE_LIMIT_DEFAULT", "100/fortnight", ("config.rateLimit.default", "100/fortnight")),
    Row("APP_RATE_LIMIT_DEFAULT", "0/minute", ("config.rateLimit.default", "0/minute")),
    Row("APP_RATE_LIMIT_DEFAULT", "lots", ("config.rateLimit.default", "lots")),
    Row("APP_RATE_LIMIT_SEARCH", "10/lightyear", ("config.rateLimit.search", "10/lightyear")),
    Row("APP_RATE_LIMIT_FAILURE_MODE", "maybe", ("config.rateLimit.failureMode", "maybe")),
    Row("APP_RATE_LIMIT_MODE", "maybe", ("config.rateLimit.mode", "maybe")),
    Row("APP_RATE_LIMIT_HEADERS_DRAFT", "12", ("config.rateLimit.headersDraft", "12")),
    Row("APP_CROSS_SITE_POLICY", "strict", ("config.crossSitePolicy", "strict")),
    Row("APP_RATE_LIMIT_SHADOW_ROUTES", "search", ("config.rateLimit.shadowRoutes", ["search"])),
    # A JSON object: the line names the bad rate or key, not the whole object.
    Row(
        "APP_RATE_LIMIT_ROUTES",
        '{"/search": "ten/minute"}',
        ("config.rateLimit.routes", {"/search": "ten/minute"}),
        show_value=False,
    ),
    Row(
        "APP_RATE_LIMIT_ROUTES",
        '{"search": "10/minute"}',
        ("config.rateLimit.routes", {"search": "10/minute"}),
        show_value=False,
    ),
    Row("APP_RATE_LIMIT_ROUTES", "[1]", ("config.rateLimit.routes", [1]), show_value=False),
    Row(
        "APP_RATE_LIMIT_EXEMPT_CIDRS", "0.0.0.0/0", ("config.rateLimit.exemptCIDRs", ["0.0.0.0/0"])
    ),
    Row("APP_RATE_LIMIT_EXEMPT_CIDRS", "::/0", ("config.rateLimit.exemptCIDRs", ["::/0"])),
    Row(
        "APP_RATE_LIMIT_EXEMPT_CIDRS",
        "10.0.0.0/33",
        ("config.rateLimit.exemptCIDRs", ["10.0.0.0/33"]),
    ),
    # Who is counted: a JWKS that gives no key, a URL keys must not come from, an
    # algorithm anyone can sign with, API keys given as keys rather than digests.
    Row(
        "APP_RATE_LIMIT_JWKS_FILE",
        "/dev/null",
        env=(("APP_RATE_LIMIT_JWT_AUDIENCE", "api"),),
        show_value=False,
    ),
    Row(
        "APP_RATE_LIMIT_JWKS_FILE",
        "/nonexistent/jwks.json",
        env=(("APP_RATE_LIMIT_JWT_AUDIENCE", "api"),),
        show_value=False,
    ),
    Row(
        "APP_RATE_LIMIT_JWKS_URL",
        "http://idp.example.com/jwks",
        ("config.rateLimit.identity.jwt.jwksUrl", "http://idp.example.com/jwks"),
        env=(("APP_RATE_LIMIT_JWT_AUDIENCE", "api"),),
        chart_extra=('config.rateLimit.identity.jwt.audience="api"',),
    ),
    Row(
        "APP_RATE_LIMIT_JWT_AUDIENCE",
        "",
        env=(("APP_RATE_LIMIT_JWKS_URL", "https://idp.example.com/jwks"),),
        show_value=False,
    ),
    Row(
        "APP_RATE_LIMIT_JWT_ALGORITHMS",
        "HS256",
        ("config.rateLimit.identity.jwt.algorithms", ["HS256"]),
    ),
    Row(
        "APP_RATE_LIMIT_JWT_ALGORITHMS",
        "none",
        ("config.rateLimit.identity.jwt.algorithms", ["none"]),
    ),
    Row("APP_RATE_LIMIT_JWT_LEEWAY", "301", ("config.rateLimit.identity.jwt.leewaySeconds", 301)),
    Row(
        "APP_RATE_LIMIT_JWKS_REFRESH_INTERVAL",
        "0",
        ("config.rateLimit.identity.jwt.refreshIntervalSeconds", 0),
    ),
    Row(
        "APP_RATE_LIMIT_JWKS_MIN_REFRESH_INTERVAL",
        "0",
        ("config.rateLimit.identity.jwt.minRefreshIntervalSeconds", 0),
    ),
    Row(
        "APP_RATE_LIMIT_API_KEY_HEADER",
        "X API Key",
        ("config.rateLimit.identity.apiKeys.header", "X API Key"),
        env=(("APP_RATE_LIMIT_API_KEYS_FILE", "/dev/null"),),
    ),
    Row(
        "APP_RATE_LIMIT_API_KEYS_FILE",
        "/dev/null",
        env=(("APP_RATE_LIMIT_API_KEY_HEADER", "X-API-Key"),),
    ),
    Row("APP_MAX_BODY_BYTES", "-1", ("config.limits.maxBodyBytes", -1)),
    Row("APP_MAX_BODY_BYTES", "1MB", ("config.limits.maxBodyBytes", "1MB")),
    Row(
        "APP_MAX_BODY_BYTES_ROUTES",
        '{"items": 10}',
        ("config.limits.maxBodyBytesRoutes", {"items": 10}),
        show_value=False,
    ),
    Row(
        "APP_MAX_BODY_BYTES_ROUTES",
        '{"/items": -5}',
        ("config.limits.maxBodyBytesRoutes", {"/items": -5}),
        show_value=False,
    ),
    # A template the app does not have: only the app can know (the chart renders it).
    Row("APP_MAX_BODY_BYTES_ROUTES", '{"/nope": 10}', show_value=False),
    Row("APP_BODY_TIMEOUT", "0", ("config.limits.bodyTimeoutSeconds", 0)),
    Row("APP_MAX_HEADER_BYTES", "100", ("config.limits.maxHeaderBytes", 100)),
    Row("APP_HEADER_TIMEOUT", "301", ("config.limits.headerTimeoutSeconds", 301)),
    Row("APP_REPLICAS", "0", ("replicaCount", 0)),
    Row("APP_REPLICAS", "10001"),
    Row("APP_REPLICAS", "two", ("replicaCount", "two")),
    Row("APP_PEER_HEARTBEAT_INTERVAL", "0.05"),
    Row("APP_PEER_HEARTBEAT_INTERVAL", "61"),
    Row("APP_PEER_HEARTBEAT_INTERVAL", "often"),
    Row(
        "APP_HOST",
        "256.0.0.1",
    ),
    Row("APP_PORT", "0"),
    Row("APP_PORT", "65536"),
    Row("APP_PORT", "http"),
    Row("APP_METRICS_PORT", "0"),
    Row("APP_METRICS_PORT", "65536"),
    Row("APP_METRICS_PORT", "metrics"),
    Row("APP_METRICS_PORT", "18080", env=(("APP_PORT", "18080"),), show_value=False),
    Row("APP_LOG_LEVEL", "verbose", ("config.logLevel", "verbose")),
    Row("APP_ACCESS_LOG", "loud"),
    Row("APP_GRACEFUL_SHUTDOWN_SECONDS", "-1", ("shutdown.timeoutGracefulShutdownSeconds", -1)),
    Row("APP_GRACEFUL_SHUTDOWN_SECONDS", "601", ("shutdown.timeoutGracefulShutdownSeconds", 601)),
    Row(
        "APP_GRACEFUL_SHUTDOWN_SECONDS", "soon", ("shutdown.timeoutGracefulShutdownSeconds", "soon")
    ),
    Row("FORWARDED_ALLOW_IPS", "*", ("proxy.trustedCIDRs", ["*"]), show_value=False),
    Row("FORWARDED_ALLOW_IPS", "10.0.0.0/33", ("proxy.trustedCIDRs", ["10.0.0.0/33"])),
    Row("FORWARDED_ALLOW_IPS", "ingress-nginx", ("proxy.trustedCIDRs", ["ingress-nginx"])),
    Row("FORWARDED_ALLOW_IPS", ",", ("proxy.trustedCIDRs", []), show_value=False),
    # The same as '*' (every client chooses its own IP), or half of it: anything broader
    # than a /8. The schema's generated pattern refuses what the service refuses.
    Row("FORWARDED_ALLOW_IPS", "0.0.0.0/0", ("proxy.trustedCIDRs", ["0.0.0.0/0"])),
    Row("FORWARDED_ALLOW_IPS", "0.0.0.0/1", ("proxy.trustedCIDRs", ["0.0.0.0/1"])),
    Row("FORWARDED_ALLOW_IPS", "::/0", ("proxy.trustedCIDRs", ["::/0"])),
    # Host bits after the prefix: 10.64.0.0/16 or 10.64.0.1/32, not both at once.
    Row("FORWARDED_ALLOW_IPS", "10.64.0.1/16", ("proxy.trustedCIDRs", ["10.64.0.1/16"])),
    Row("FORWARDED_ALLOW_IPS", DEEP_JSON_LIST, show_value=False),
]


def _params(rows: list[Row]) -> list[Any]:
    return [
        pytest.param(
            row,
            id=row.id,
            marks=[pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else [],
        )
        for row in rows
    ]


def _start(row: Row) -> tuple[int | None, str]:
    """(exit status or None if it started serving, stderr) of ``python -m gatehouse``.

    Started means it said "serving on": no fixed wait, which a busy machine outlasts.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    env.pop("FORWARDED_ALLOW_IPS", None)
    env.update({"APP_HOST": "127.0.0.1", "APP_PORT": str(free_port()), "APP_ACCESS_LOG": "false"})
    env.update(dict(row.env))
    env[row.variable] = row.value
    process = subprocess.Popen(
        [PYTHON, "-m", "gatehouse"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    watchdog = threading.Timer(120, process.kill)  # bounded, whatever the process does
    watchdog.start()
    try:
        stderr = ""
        for line in process.stderr:  # ends when the process exits
            if line.startswith("gatehouse: serving on"):
                return None, stderr + line  # the value was accepted
            stderr += line
        return process.wait(timeout=60), stderr
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        process.stderr.close()


def _helm(row: Row) -> tuple[int, str]:
    assert row.chart is not None
    path, value = row.chart
    extra = [arg for pair in row.chart_extra for arg in ("--set-json", pair)]
    result = subprocess.run(
        [
            str(HELM),
            "template",
            "t",
            str(CHART),
            "--set-json",
            f"{path}={json.dumps(value)}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.returncode, result.stdout[-2000:] + result.stderr


@pytest.fixture(scope="module")
def started() -> dict[int, tuple[int | None, str]]:
    """Every row's ``python -m gatehouse``, run in parallel once."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return {id(row): result for row, result in zip(ROWS, pool.map(_start, ROWS), strict=True)}


@pytest.fixture(scope="module")
def rendered() -> dict[int, tuple[int, str]]:
    if not HELM.exists():
        pytest.skip("scripts/helm is missing")
    rows = [row for row in ROWS if row.chart is not None]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return {id(row): result for row, result in zip(rows, pool.map(_helm, rows), strict=True)}


@pytest.mark.parametrize("row", _params(ROWS))
def test_the_service_refuses_to_start(started: dict[int, tuple[int | None, str]], row: Row) -> None:
    status, stderr = started[id(row)]
    assert status is not None, f"{row.variable}={row.value!r} was accepted: the service started"
    lines = stderr.splitlines()
    assert status == 2, f"exit status {status}, stderr:\n{stderr[-2000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr[-2000:]}"
    line = lines[0]
    assert line.startswith("gatehouse: invalid configuration: "), line
    assert row.variable in line, line
    if row.show_value:
        assert repr(row.value) in line, line


CHART_ROWS = [row for row in ROWS if row.chart is not None]


@pytest.mark.parametrize(
    "row",
    [pytest.param(row, id=f"{row.chart[0]}={json.dumps(row.chart[1])}") for row in CHART_ROWS],
)
def test_the_chart_refuses_the_same_value(rendered: dict[int, tuple[int, str]], row: Row) -> None:
    assert row.chart is not None
    status, output = rendered[id(row)]
    path, value = row.chart
    pointer = "/" + path.replace(".", "/")
    assert status != 0, f"helm template accepted {path}={json.dumps(value)}"
    assert pointer in output, output[-2000:]


def test_a_non_utf8_origins_file_names_the_variable(tmp_path: Path) -> None:
    # Today: "gatehouse: invalid configuration: settings: 'utf-8' codec can't decode ...":
    # the line does not say which variable (the read catches OSError, not UnicodeDecodeError).
    path = tmp_path / "APP_ALLOWED_ORIGINS"
    path.write_bytes(b"https://a.example,\xff\xfe")
    status, stderr = _start(Row("APP_ALLOWED_ORIGINS_FILE", str(path)))
    assert status == 2, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert "APP_ALLOWED_ORIGINS_FILE" in stderr, stderr


def test_a_refused_redis_url_does_not_echo_its_password() -> None:
    status, stderr = _start(Row("APP_REDIS_URL", "http://:s3cret-pw@redis:6379/0"))
    assert status == 2, stderr
    assert "APP_REDIS_URL" in stderr
    assert "s3cret-pw" not in stderr, stderr
