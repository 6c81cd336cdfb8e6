"""values.schema.json refuses each unsafe value before anything reaches a cluster, and the
error names the offending field. Checked through `helm template` and `helm lint`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import CHART, RELEASE, helm

# (case id, values overriding the defaults, text the error must contain)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("cidr-prefix-too-long", {"proxy": {"trustedCIDRs": ["10.0.0.0/33"]}}, "/proxy/trustedCIDRs/0"),
    (
        "cidr-octet-out-of-range",
        {"proxy": {"trustedCIDRs": ["10.300.0.0/16"]}},
        "/proxy/trustedCIDRs/0",
    ),
    (
        "cidr-not-an-address",
        {"proxy": {"trustedCIDRs": ["ingress-nginx"]}},
        "/proxy/trustedCIDRs/0",
    ),
    ("cidr-trusts-everyone", {"proxy": {"trustedCIDRs": ["0.0.0.0/0"]}}, "/proxy/trustedCIDRs/0"),
    ("cidr-list-empty", {"proxy": {"trustedCIDRs": []}}, "/proxy/trustedCIDRs"),
    ("origin-star", {"config": {"allowedOrigins": ["*"]}}, "/config/allowedOrigins/0"),
    (
        "origin-with-path",
        {"config": {"allowedOrigins": ["https://app.example.com/app"]}},
        "/config/allowedOrigins/0",
    ),
    (
        "origin-trailing-slash",
        {"config": {"allowedOrigins": ["https://app.example.com/"]}},
        "/config/allowedOrigins/0",
    ),
    (
        "origin-no-scheme",
        {"config": {"allowedOrigins": ["app.example.com"]}},
        "/config/allowedOrigins/0",
    ),
    ("origins-empty", {"config": {"allowedOrigins": []}}, "/config/allowedOrigins"),
    ("unknown-top-level-key", {"replicas": 3}, "'replicas' not allowed"),
    (
        "unknown-nested-key",
        {"config": {"allowedOrigin": ["https://a.example"]}},
        "'allowedOrigin' not allowed",
    ),
    ("tag-latest", {"image": {"tag": "latest"}}, "/image/tag"),
    ("redis-tag-latest", {"redis": {"image": {"tag": "latest"}}}, "/redis/image/tag"),
    ("cors-max-age-above-chromium-cap", {"config": {"corsMaxAge": 86400}}, "/config/corsMaxAge"),
    (
        "failure-mode-unknown",
        {"config": {"rateLimit": {"failureMode": "maybe"}}},
        "/config/rateLimit/failureMode",
    ),
    (
        "client-namespace-not-a-dns-label",
        {"networkPolicy": {"clientNamespaces": ["Gatehouse_Verify"]}},
        "/networkPolicy/clientNamespaces/0",
    ),
    (
        "client-namespaces-not-a-list",
        {"networkPolicy": {"clientNamespaces": "gatehouse-verify"}},
        "/networkPolicy/clientNamespaces",
    ),
    ("dev-mode-not-a-boolean", {"devMode": {"enabled": "yes"}}, "/devMode/enabled"),
    (
        "rate-limit-mode-unknown",
        {"config": {"rateLimit": {"mode": "maybe"}}},
        "/config/rateLimit/mode",
    ),
    (
        "cross-site-policy-unknown",
        {"config": {"crossSitePolicy": "strict"}},
        "/config/crossSitePolicy",
    ),
    (
        "shadow-route-without-slash",
        {"config": {"rateLimit": {"shadowRoutes": ["search"]}}},
        "/config/rateLimit/shadowRoutes/0",
    ),
    (
        "shadow-route-with-comma",
        {"config": {"rateLimit": {"shadowRoutes": ["/search,/items"]}}},
        "/config/rateLimit/shadowRoutes/0",
    ),
    (
        "shadow-routes-not-a-list",
        {"config": {"rateLimit": {"shadowRoutes": "/search"}}},
        "/config/rateLimit/shadowRoutes",
    ),
    (
        "route-rate-not-a-number",
        {"config": {"rateLimit": {"routes": {"/search": "ten/minute"}}}},
        "/config/rateLimit/routes",
    ),
    (
        "route-rate-bad-second-window",
        {"config": {"rateLimit": {"routes": {"/search": "10/second;ten/minute"}}}},
        "/config/rateLimit/routes",
    ),
    (
        "route-key-without-slash",
        {"config": {"rateLimit": {"routes": {"search": "10/minute"}}}},
        "/config/rateLimit/routes",
    ),
    ("routes-not-a-map", {"config": {"rateLimit": {"routes": [1]}}}, "/config/rateLimit/routes"),
    (
        "default-rate-trailing-separator",
        {"config": {"rateLimit": {"default": "10/second;"}}},
        "/config/rateLimit/default",
    ),
    (
        "exempt-cidr-everyone",
        {"config": {"rateLimit": {"exemptCIDRs": ["0.0.0.0/0"]}}},
        "/config/rateLimit/exemptCIDRs/0",
    ),
    (
        "exempt-cidr-everyone-ipv6",
        {"config": {"rateLimit": {"exemptCIDRs": ["::/0"]}}},
        "/config/rateLimit/exemptCIDRs/0",
    ),
    (
        "exempt-cidr-everyone-any-address",
        {"config": {"rateLimit": {"exemptCIDRs": ["10.0.0.0/0"]}}},
        "/config/rateLimit/exemptCIDRs/0",
    ),
    (
        "exempt-cidr-prefix-too-long",
        {"config": {"rateLimit": {"exemptCIDRs": ["10.0.0.0/33"]}}},
        "/config/rateLimit/exemptCIDRs/0",
    ),
    (
        "exempt-cidr-not-an-address",
        {"config": {"rateLimit": {"exemptCIDRs": ["monitoring"]}}},
        "/config/rateLimit/exemptCIDRs/0",
    ),
    ("dev-mode-unknown-key", {"devMode": {"reload": True}}, "'reload' not allowed"),
]


@pytest.fixture(scope="module")
def values_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-values")
    files = {}
    for case, values, _ in BAD_VALUES:
        files[case] = folder / f"{case}.yaml"
        files[case].write_text(yaml.safe_dump(values))
    return files


@pytest.mark.parametrize("command", ["template", "lint"])
@pytest.mark.parametrize(("case", "values", "field"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_schema_refuses(
    values_files: dict[str, Path], command: str, case: str, values: dict[str, Any], field: str
) -> None:
    args = ["template", RELEASE] if command == "template" else ["lint", "--strict"]
    result = helm(*args, str(CHART), "-f", str(values_files[case]))
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"helm {command} accepted {values}"
    assert "schema" in output, output
    assert field in output, output


def test_valid_edge_values_are_accepted(tmp_path: Path) -> None:
    # The refusals above must come from the bad value, not from a schema that refuses everything.
    values = {
        "proxy": {"trustedCIDRs": ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "127.0.10.0/24"]},
        "config": {
            "allowedOrigins": ["https://app.example.com", "http://localhost:5173"],
            "corsMaxAge": 7200,
        },
        "image": {"tag": "1.2.3"},
        "networkPolicy": {"clientNamespaces": ["gatehouse-verify", "a", "team-0"]},
        "devMode": {"enabled": True},
    }
    values["config"]["crossSitePolicy"] = "off"
    values["config"]["rateLimit"] = {
        "default": "10/second; 100/minute",
        "search": "2 per 10 seconds;100/hour",
        "mode": "shadow",
        "shadowRoutes": ["/search", "/items/{item_id}"],
        "routes": {"/items/{item_id}": "5/second;100/minute", "/search": "1/second"},
        "exemptCIDRs": ["10.64.200.0/24", "192.168.1.7/32", "fd00:1::/64"],
    }
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("template", RELEASE, str(CHART), "-f", str(path))
    assert result.returncode == 0, result.stderr
