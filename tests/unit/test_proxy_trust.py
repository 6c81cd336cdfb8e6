from __future__ import annotations

import pytest

from tests.unit.conftest import make_client

pytestmark = pytest.mark.anyio

# (peer address, X-Forwarded-For sent, client IP the service must see)
CASES = [
    # An untrusted peer cannot choose its identity.
    ("203.0.113.7", "1.2.3.4", "203.0.113.7"),
    ("203.0.113.7", "10.0.0.1", "203.0.113.7"),
    # The ingress (trusted) appends the real client; a value the client wrote to the
    # left is not believed, the walk stops at the first untrusted hop from the right.
    ("10.0.0.5", "198.51.100.23", "198.51.100.23"),
    ("10.0.0.5", "6.6.6.6, 198.51.100.23", "198.51.100.23"),
    ("10.0.0.5", "6.6.6.6, 198.51.100.23, 10.0.9.9", "198.51.100.23"),
    # No header: the peer itself.
    ("10.0.0.5", None, "10.0.0.5"),
]


@pytest.mark.parametrize(("peer", "forwarded_for", "expected"), CASES)
async def test_whoami_shows_the_trusted_client_ip(peer, forwarded_for, expected):
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    async with make_client(client_addr=(peer, 40000)) as client:
        response = await client.get("/whoami", headers=headers)
    assert response.status_code == 200
    assert response.json()["client_ip"] == expected


async def test_the_limit_follows_the_trusted_client_ip_not_the_header():
    async with make_client(client_addr=("203.0.113.7", 1), rate_limit_search="2/minute") as client:
        statuses = [
            (await client.get("/search?q=x", headers={"x-forwarded-for": f"1.1.1.{i}"})).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 429, 429]


async def test_clients_behind_the_ingress_get_their_own_budgets():
    async with make_client(client_addr=("10.0.0.5", 1), rate_limit_search="1/minute") as client:
        first = await client.get("/search?q=x", headers={"x-forwarded-for": "198.51.100.1"})
        second = await client.get("/search?q=x", headers={"x-forwarded-for": "198.51.100.2"})
        again = await client.get("/search?q=x", headers={"x-forwarded-for": "198.51.100.1"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


async def test_whoami_reports_scheme_and_host():
    async with make_client(client_addr=("10.0.0.5", 1)) as client:
        response = await client.get(
            "/whoami", headers={"x-forwarded-proto": "https", "host": "api.example.com"}
        )
    body = response.json()
    assert (body["scheme"], body["host"]) == ("https", "api.example.com")
