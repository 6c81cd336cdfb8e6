"""Schemathesis against the service's own OpenAPI document, in process.

The whole service (edge included, wrapped by uvicorn's proxy-headers layer exactly as
``python -m gatehouse`` runs it) with ``docs_enabled`` so ``/openapi.json`` exists. Every
generated request, valid or not, must get an answer below 500 that carries the security
headers. The ASGI transport keeps every request inside this process: nothing reaches the
network, and the schema's servers, remote references and proxies are never used.
"""

from __future__ import annotations

import re

import schemathesis
import uvicorn
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from gatehouse.service import build_service
from gatehouse.settings import load_settings

BASE_URL = "http://api.example.com"  # the Host the service trusts

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def _app() -> object:
    settings = load_settings(
        docs_enabled=True,
        trusted_hosts=["api.example.com"],
        allowed_origins=["https://app.example.com"],
        rate_limit_default="1000000/minute",
        rate_limit_search="1000000/minute",
        access_log=False,
    )
    config = uvicorn.Config(
        build_service(settings),
        proxy_headers=True,
        forwarded_allow_ips=["127.0.10.0/24"],
        server_header=False,
    )
    config.load()
    return config.loaded_app


CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 20260807,  # the same cases on every run; a failure reproduces
        "generation": {
            "max-examples": 25,
            "mode": "all",  # schema-valid and schema-violating requests
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "analysis": {"constants": {"enabled": False}},
        "max-redirects": 0,
        "request-timeout": 10,
    }
)

schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _app(), config=CONFIG, headers={"host": "api.example.com"}
)


@schema.parametrize()
def test_no_server_error_and_the_security_headers(case: Case) -> None:
    response = case.call(base_url=BASE_URL)
    request = f"{case.method} {case.formatted_path} query={case.query} body={case.body!r}"
    assert response.status_code < 500, f"{response.status_code} to {request}: {response.text[:300]}"
    headers = {name.lower(): value for name, value in response.headers.items()}
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == [value] or headers.get(name) == value, (
            f"{name} missing on {response.status_code} to {request}: {headers}"
        )
    csp = headers.get("content-security-policy")
    assert csp in ([API_CSP], API_CSP), f"CSP {csp!r} on {response.status_code} to {request}"
    # No generated request carries an X-Request-ID (the schema has no header parameters):
    # every response has one the service made.
    request_ids = headers.get("x-request-id", [])  # schemathesis: a list per field name
    assert len(request_ids) == 1 and re.fullmatch(r"[0-9a-f]{26}", request_ids[0]), (
        f"x-request-id {request_ids!r} on {response.status_code} to {request}"
    )
