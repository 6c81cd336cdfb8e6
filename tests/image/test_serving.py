"""The image run as the chart runs it, as the chart's user and as an arbitrary uid (gid 0)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from .container import Container

REFUSED_ORIGIN = "https://evil.example"
SECURITY_HEADERS = ("x-content-type-options", "cache-control", "content-security-policy")


@pytest.fixture(
    scope="module",
    params=["chart-user", "arbitrary-uid-gid-0"],
)
def served(request, pod, start_container) -> Container:  # type: ignore[no-untyped-def]
    user = (
        f"{pod.run_as_user}:{pod.run_as_group}"
        if request.param == "chart-user"
        else "1000770000:0"  # OpenShift's restricted SCC: a random uid in group 0
    )
    return start_container(user)


@pytest.fixture(scope="module")
def allowed_origin(pod) -> str:  # type: ignore[no-untyped-def]
    return pod.env["APP_ALLOWED_ORIGINS"].split(",")[0].strip()


@pytest.fixture(scope="module")
def trusted_host(pod) -> str:  # type: ignore[no-untyped-def]
    return pod.env.get("APP_TRUSTED_HOSTS", "localhost").split(",")[0].strip()


def test_healthz_with_security_headers(served: Container) -> None:
    response = httpx.get(f"{served.management_url}/healthz", timeout=5)
    assert response.status_code == 200
    for name in SECURITY_HEADERS:
        assert name in response.headers, name
    assert "server" not in response.headers  # --no-server-header from the chart's args


def test_readyz(served: Container) -> None:
    assert httpx.get(f"{served.management_url}/readyz", timeout=5).status_code == 200


def test_probes_and_metrics_only_on_the_management_port(served: Container) -> None:
    # The chart's pod: the Service (the serving port) can never expose them.
    assert served.metrics_port is not None
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{served.url}{path}", timeout=5).status_code in (400, 404), path
        assert httpx.get(f"{served.management_url}{path}", timeout=5).status_code == 200, path


def test_allowed_origin_gets_cors_headers(
    served: Container, allowed_origin: str, trusted_host: str
) -> None:
    response = httpx.get(
        f"{served.url}/search",
        params={"q": "lamp"},
        headers={"Origin": allowed_origin, "Host": trusted_host},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == allowed_origin
    assert "ratelimit-policy" in response.headers  # the limiter ran (Redis, or memory)


def test_refused_origin_gets_none(served: Container, trusted_host: str) -> None:
    response = httpx.get(
        f"{served.url}/whoami", headers={"Origin": REFUSED_ORIGIN, "Host": trusted_host}, timeout=5
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    for name in SECURITY_HEADERS:
        assert name in response.headers, name


def test_forwarded_for_believed_only_from_the_charts_proxy_cidrs(
    served: Container, pod, trusted_host: str
) -> None:  # type: ignore[no-untyped-def]
    trusted = pod.env.get("FORWARDED_ALLOW_IPS")
    if not trusted:
        pytest.skip("the chart sets no FORWARDED_ALLOW_IPS")
    network = ipaddress.ip_network(trusted.split(",")[0])
    if not network.subnet_of(ipaddress.ip_network("127.0.0.0/8")):  # type: ignore[arg-type]
        pytest.skip(f"proxy CIDR {network} is not on loopback (values-local.yaml's is)")
    headers = {"X-Forwarded-For": "203.0.113.9", "Host": trusted_host}
    proxy = str(next(network.hosts()))
    with httpx.Client(transport=httpx.HTTPTransport(local_address=proxy), timeout=5) as client:
        assert client.get(f"{served.url}/whoami", headers=headers).json()["client_ip"] == (
            "203.0.113.9"
        )
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=5) as c:
        assert c.get(f"{served.url}/whoami", headers=headers).json()["client_ip"] == "127.0.0.1"
