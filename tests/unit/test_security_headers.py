from __future__ import annotations

import json

import pytest

from tests.unit.conftest import ALLOWED, make_client

pytestmark = pytest.mark.anyio

# What every non-HTML answer carries (OWASP REST cheat sheet), HSTS aside.
EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}
# What only a document (HTML) carries: on JSON a browser never uses them.
DOCUMENT_ONLY = {
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "x-permitted-cross-domain-policies": "none",
}
# Every feature a JSON API has no use for, switched off.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer",
        "autoplay",
        "camera",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "geolocation",
        "gyroscope",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "picture-in-picture",
        "publickey-credentials-get",
        "screen-wake-lock",
        "sync-xhr",
        "usb",
        "xr-spatial-tracking",
        "clipboard-read",
        "clipboard-write",
        "hid",
        "idle-detection",
        "serial",
    )
)
# Two years (APP_HSTS_MAX_AGE's default), subdomains included, not preloaded.
HSTS = "max-age=63072000; includeSubDomains"
# Swagger UI and ReDoc: their CDN's scripts and styles, one inline script, never framed.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src https://fonts.gstatic.com; connect-src 'self'; worker-src blob:; "
    "frame-ancestors 'none'"
)


def assert_security_headers(response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get_list(name) == [value], f"{name} on {response.status_code}"
    for name in [*DOCUMENT_ONLY, "permissions-policy", "cross-origin-embedder-policy"]:
        assert name not in response.headers, f"{name} on a {response.status_code} that is not HTML"
    assert "server" not in response.headers
    assert "x-powered-by" not in response.headers


# Every kind of answer the edge or the app can give, each with its own status.
CASES = [
    ("GET", "/search?q=x", {}, 200),
    ("GET", "/nope", {}, 404),
    ("DELETE", "/search", {}, 405),
    ("GET", "/search", {}, 422),
    ("GET", "/healthz", {"host": "evil.example.net"}, 200),
    ("GET", "/search?q=x", {"host": "evil.example.net"}, 400),
    ("GET", "/test/error", {}, 500),
    (
        "OPTIONS",
        "/items",
        {"origin": ALLOWED, "access-control-request-method": "POST"},
        200,
    ),
    (
        "OPTIONS",
        "/items",
        {"origin": "https://evil.example", "access-control-request-method": "POST"},
        400,
    ),
]


@pytest.mark.parametrize(("method", "path", "headers", "status"), CASES)
async def test_every_response_carries_the_security_headers(method, path, headers, status):
    async with make_client() as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert_security_headers(response)


async def test_a_429_carries_the_security_headers():
    async with make_client(rate_limit_search="1/minute") as client:
        await client.get("/search?q=x")
        response = await client.get("/search?q=x")
    assert response.status_code == 429
    assert_security_headers(response)


async def test_a_500_is_problem_json_and_leaks_nothing():
    async with make_client() as client:
        response = await client.get("/test/error")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(response.text)
    assert body["status"] == 500
    assert "deliberate" not in response.text


async def test_hsts_only_when_the_scheme_is_https():
    async with make_client() as client:
        plain = await client.get("/healthz")
    async with make_client(base_url="https://api.example.com") as client:
        secure = await client.get("/healthz")
    assert "strict-transport-security" not in plain.headers
    assert secure.headers["strict-transport-security"] == HSTS


async def test_hsts_when_a_trusted_proxy_says_https():
    async with make_client(client_addr=("10.1.2.3", 4000)) as client:
        response = await client.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert response.headers.get("strict-transport-security") == HSTS


async def test_an_untrusted_peer_cannot_claim_https():
    async with make_client(client_addr=("203.0.113.9", 4000)) as client:
        response = await client.get("/healthz", headers={"x-forwarded-proto": "https"})
    assert "strict-transport-security" not in response.headers


async def test_referrer_policy_is_configurable():
    async with make_client(
        referrer_policy="strict-origin-when-cross-origin", docs_enabled=True
    ) as client:
        response = await client.get("/docs")
    assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_headers_set_by_a_route_are_replaced_not_doubled():
    async with make_client() as client:
        response = await client.get("/metrics")
    assert response.headers.get_list("cache-control") == ["no-store"]


async def test_docs_render_under_their_own_policy():
    async with make_client(docs_enabled=True) as client:
        docs = await client.get("/docs")
        schema = await client.get("/openapi.json")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert docs.headers["content-security-policy"] == DOCS_CSP
    # A document gets the document-only fields, each once; the CDN's scripts load
    # without credentials, so the docs embed under ``credentialless``.
    for name, value in {**EXPECTED, **DOCUMENT_ONLY}.items():
        if name != "content-security-policy":
            assert docs.headers.get_list(name) == [value], name
    assert docs.headers["permissions-policy"] == PERMISSIONS_POLICY
    assert docs.headers["cross-origin-embedder-policy"] == "credentialless"
    # The schema is data, so it keeps the API's policy and nothing of a document's.
    assert_security_headers(schema)


async def test_html_from_a_route_gets_the_document_block():
    """By content type, not path: any HTML answer is a document."""
    from gatehouse.middleware.security_headers import HeaderBlocks

    blocks = HeaderBlocks(referrer_policy="same-origin", docs_paths=["/docs"])
    html = [(b"content-type", b"text/html; charset=utf-8")]
    page = dict(blocks.apply(html, blocks.api, "/page", https=False))
    assert page[b"content-security-policy"] == b"default-src 'none'; frame-ancestors 'none'"
    assert page[b"cross-origin-embedder-policy"] == b"require-corp"
    assert page[b"referrer-policy"] == b"same-origin"
    secure_page = dict(blocks.apply(html, blocks.api_https, "/page", https=True))
    assert secure_page[b"strict-transport-security"] == HSTS.encode()
    json_answer = dict(
        blocks.apply([(b"content-type", b"application/json")], blocks.api, "/docs", False)
    )
    assert b"referrer-policy" not in json_answer


async def test_docs_are_off_by_default():
    async with make_client() as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404
