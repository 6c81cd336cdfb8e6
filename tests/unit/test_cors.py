from __future__ import annotations

import pytest

from tests.unit.conftest import ALLOWED, make_client

pytestmark = pytest.mark.anyio

HOSTILE_ORIGINS = [
    "null",
    "https://app.example.com.evil.net",
    "http://app.example.com",  # wrong scheme
    "https://app.example.com:8443",  # wrong port
    "https://app.example.com/",  # trailing slash: not what a browser sends, not equal
    "https://evil.example",
    "https://APP.example.com",  # browsers lower-case the host; a raw match must not widen
]


async def test_an_allowed_origin_is_mirrored_with_credentials():
    async with make_client() as client:
        response = await client.get("/search?q=x", headers={"origin": ALLOWED})
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    # What a page may read: the rate-limit fields (a 429's Retry-After too) and the id.
    assert response.headers["access-control-expose-headers"] == (
        "X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, RateLimit-Policy, "
        "RateLimit, Retry-After, X-Request-ID"
    )
    assert response.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_a_hostile_origin_gets_no_allow_origin(origin):
    async with make_client() as client:
        response = await client.get("/search?q=x", headers={"origin": origin})
    assert response.status_code == 200  # CORS hides the answer; the browser enforces it
    assert "access-control-allow-origin" not in response.headers
    assert response.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize("origin", HOSTILE_ORIGINS)
async def test_a_hostile_preflight_is_refused(origin):
    headers = {"origin": origin, "access-control-request-method": "PUT"}
    async with make_client() as client:
        response = await client.options("/items/1", headers=headers)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_for_an_allowed_origin():
    headers = {
        "origin": ALLOWED,
        "access-control-request-method": "PUT",
        "access-control-request-headers": "content-type, authorization",
    }
    async with make_client() as client:
        response = await client.options("/items/1", headers=headers)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed_methods = {
        m.strip() for m in response.headers["access-control-allow-methods"].split(",")
    }
    assert allowed_methods == {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
    # APP_CORS_MAX_AGE's default, well under the 7200 s Chromium caps a preflight at.
    assert response.headers["access-control-max-age"] == "600"


@pytest.mark.parametrize(
    ("method", "header"),
    [("PATCH", None), ("PUT", "x-custom-header")],
)
async def test_a_preflight_asking_for_more_than_allowed_is_refused(method, header):
    headers = {"origin": ALLOWED, "access-control-request-method": method}
    if header:
        headers["access-control-request-headers"] = header
    async with make_client() as client:
        response = await client.options("/items/1", headers=headers)
    assert response.status_code == 400


async def test_a_preflight_never_reaches_the_limiter():
    headers = {"origin": ALLOWED, "access-control-request-method": "GET"}
    async with make_client(rate_limit_search="1/minute") as client:
        for _ in range(5):
            preflight = await client.options("/search", headers=headers)
            assert preflight.status_code == 200
            assert "ratelimit" not in preflight.headers
        first = await client.get("/search?q=x", headers={"origin": ALLOWED})
    assert first.status_code == 200


async def test_vary_origin_on_a_response_without_origin():
    async with make_client() as client:
        response = await client.get("/healthz")
    assert response.headers.get_list("vary") == ["Origin"]


@pytest.mark.parametrize(
    ("path", "status"), [("/test/error", 500), ("/nope", 404), ("/search", 422)]
)
async def test_errors_keep_cors_for_an_allowed_origin(path, status):
    async with make_client() as client:
        response = await client.get(path, headers={"origin": ALLOWED})
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_a_429_keeps_cors_for_an_allowed_origin():
    async with make_client(rate_limit_search="1/minute") as client:
        await client.get("/search?q=x", headers={"origin": ALLOWED})
        response = await client.get("/search?q=x", headers={"origin": ALLOWED})
    assert response.status_code == 429
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_a_bad_host_answer_keeps_cors_for_an_allowed_origin():
    async with make_client() as client:
        response = await client.get(
            "/search?q=x", headers={"origin": ALLOWED, "host": "evil.example"}
        )
    assert response.status_code == 400
    assert response.headers["access-control-allow-origin"] == ALLOWED


async def test_refusals_are_counted_in_metrics():
    async with make_client() as client:
        await client.get("/healthz", headers={"origin": "https://evil.example"})
        await client.options(
            "/items",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        metrics = (await client.get("/metrics")).text
    assert 'gatehouse_cors_rejections_total{reason="origin_not_listed"} 2.0' in metrics
