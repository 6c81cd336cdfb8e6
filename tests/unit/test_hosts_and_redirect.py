from __future__ import annotations

import pytest

from tests.unit.conftest import make_client

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "host", ["evil.example.net", "api.example.com.evil.net", "www.api.example.com", ""]
)
async def test_a_host_outside_the_list_is_refused(host):
    async with make_client() as client:
        response = await client.get("/search?q=x", headers={"host": host})
    assert response.status_code == 400


async def test_a_listed_host_with_a_port_is_accepted():
    async with make_client() as client:
        response = await client.get("/search?q=x", headers={"host": "api.example.com:8443"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_by_pod_ip_pass_the_host_check(path):
    async with make_client() as client:
        response = await client.get(path, headers={"host": "10.244.1.17:8000"})
    assert response.status_code == 200


async def test_no_www_redirect():
    async with make_client(trusted_hosts=["www.api.example.com"]) as client:
        response = await client.get("/search?q=x", headers={"host": "api.example.com"})
    assert response.status_code == 400


async def test_https_redirect_is_off_by_default():
    async with make_client() as client:
        response = await client.get("/search?q=x")
    assert response.status_code == 200


async def test_https_redirect_sends_plain_http_to_https():
    async with make_client(https_redirect=True) as client:
        response = await client.get("/search?q=x")
    # Starlette's HTTPSRedirectMiddleware: 307, temporary (https_redirect is a setting that
    # can be turned off, so no client may cache it as a 308 would be) and method-keeping.
    assert response.status_code == 307
    assert response.headers["location"] == "https://api.example.com/search?q=x"


async def test_no_redirect_loop_behind_a_tls_terminating_ingress():
    # The ingress (a trusted peer) terminated TLS and says so.
    async with make_client(https_redirect=True, client_addr=("10.0.3.4", 5000)) as client:
        response = await client.get("/search?q=x", headers={"x-forwarded-proto": "https"})
    assert response.status_code == 200


async def test_an_untrusted_peer_saying_https_is_still_redirected():
    async with make_client(https_redirect=True, client_addr=("198.51.100.1", 5000)) as client:
        response = await client.get("/search?q=x", headers={"x-forwarded-proto": "https"})
    assert response.status_code == 307
    assert response.headers["location"] == "https://api.example.com/search?q=x"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_are_never_redirected(path):
    async with make_client(https_redirect=True) as client:
        response = await client.get(path, headers={"host": "10.244.1.17:8000"})
    assert response.status_code == 200
