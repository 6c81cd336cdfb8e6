"""The reloadable rate-limit and cross-site policy: values -> ConfigMap keys -> the service.

Each key must land in the ConfigMap with the environment's value (the service re-reads
those keys from the mounted directory) and the service must accept what the chart renders.
That a policy change leaves the pod template alone is in test_config_checksum.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from pathlib import Path

import pytest

from gatehouse.config_reload import ConfigWatcher
from gatehouse.settings import Settings, load_settings

from .conftest import API, ENVIRONMENTS, Doc, load_values, one, render

ENVS = list(ENVIRONMENTS)
POLICY_KEYS = (
    "APP_RATE_LIMIT_MODE",
    "APP_RATE_LIMIT_SHADOW_ROUTES",
    "APP_RATE_LIMIT_ROUTES",
    "APP_RATE_LIMIT_EXEMPT_CIDRS",
    "APP_CROSS_SITE_POLICY",
)


def _data(docs: list[Doc]) -> dict[str, str]:
    return one(docs, "ConfigMap", API)["data"]


def _expected(env: str) -> dict[str, str]:
    config = load_values(env)["config"]
    limits = config["rateLimit"]
    return {
        "APP_RATE_LIMIT_DEFAULT": limits["default"],
        "APP_RATE_LIMIT_SEARCH": limits["search"],
        "APP_RATE_LIMIT_MODE": limits["mode"],
        "APP_RATE_LIMIT_SHADOW_ROUTES": ",".join(limits["shadowRoutes"]),
        "APP_RATE_LIMIT_ROUTES": json.dumps(
            limits["routes"], separators=(",", ":"), sort_keys=True
        ),
        "APP_RATE_LIMIT_EXEMPT_CIDRS": ",".join(limits["exemptCIDRs"]),
        "APP_CROSS_SITE_POLICY": config["crossSitePolicy"],
    }


@pytest.mark.parametrize("env", ENVS)
def test_policy_keys_hold_the_environment_values(rendered: dict[str, list[Doc]], env: str) -> None:
    data = _data(rendered[env])
    for key, value in _expected(env).items():
        assert data[key] == value, f"{env}: {key}"


def test_defaults_render_every_policy_key_even_when_empty(rendered: dict[str, list[Doc]]) -> None:
    # An absent file would keep the running value: removing the last shadow route, route
    # limit or exempt CIDR must still reach the pods, as an empty key.
    data = _data(rendered["default"])
    assert {key: data[key] for key in POLICY_KEYS} == {
        "APP_RATE_LIMIT_MODE": "enforce",
        "APP_RATE_LIMIT_SHADOW_ROUTES": "",
        "APP_RATE_LIMIT_ROUTES": "{}",
        "APP_RATE_LIMIT_EXEMPT_CIDRS": "",
        "APP_CROSS_SITE_POLICY": "refuse",
    }


def test_prod_enforces_a_two_window_item_limit_and_exempts_monitoring(
    rendered: dict[str, list[Doc]],
) -> None:
    data = _data(rendered["prod"])
    assert data["APP_RATE_LIMIT_MODE"] == "enforce"
    assert data["APP_RATE_LIMIT_SHADOW_ROUTES"] == ""
    assert data["APP_CROSS_SITE_POLICY"] == "refuse"
    routes = json.loads(data["APP_RATE_LIMIT_ROUTES"])
    assert len(routes["/items/{item_id}"].split(";")) == 2
    assert data["APP_RATE_LIMIT_EXEMPT_CIDRS"]


def test_staging_rolls_out_a_limit_in_shadow(rendered: dict[str, list[Doc]]) -> None:
    data = _data(rendered["staging"])
    shadowed = data["APP_RATE_LIMIT_SHADOW_ROUTES"]
    assert data["APP_RATE_LIMIT_MODE"] == "shadow" or shadowed
    # The limit being rolled out is the one prod enforces on that route.
    prod_routes = json.loads(_data(rendered["prod"])["APP_RATE_LIMIT_ROUTES"])
    for route in filter(None, shadowed.split(",")):
        assert json.loads(data["APP_RATE_LIMIT_ROUTES"])[route] == prod_routes[route]


def test_set_and_set_json_reach_the_configmap() -> None:
    data = _data(
        render(
            "default",
            "--set",
            "config.rateLimit.mode=shadow",
            "--set",
            "config.crossSitePolicy=off",
            "--set",
            "config.rateLimit.default=10/second;100/minute",
            "--set-json",
            'config.rateLimit.shadowRoutes=["/search","/items/{item_id}"]',
            "--set-json",
            'config.rateLimit.routes={"/search":"2/second","/items/{item_id}":"5/second;100/minute"}',
            "--set-json",
            'config.rateLimit.exemptCIDRs=["10.64.200.0/24","fd00:1::/64"]',
        )
    )
    assert data["APP_RATE_LIMIT_MODE"] == "shadow"
    assert data["APP_CROSS_SITE_POLICY"] == "off"
    assert data["APP_RATE_LIMIT_DEFAULT"] == "10/second;100/minute"
    assert data["APP_RATE_LIMIT_SHADOW_ROUTES"] == "/search,/items/{item_id}"
    # Compact, keys sorted: the same map always renders the same bytes (and checksum).
    assert (
        data["APP_RATE_LIMIT_ROUTES"]
        == '{"/items/{item_id}":"5/second;100/minute","/search":"2/second"}'
    )
    assert data["APP_RATE_LIMIT_EXEMPT_CIDRS"] == "10.64.200.0/24,fd00:1::/64"


def _only_these_variables(monkeypatch: pytest.MonkeyPatch, data: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith("APP_"):
            monkeypatch.delenv(name)
    for key, value in data.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("env", ENVS)
def test_the_service_starts_with_the_rendered_configmap(
    rendered: dict[str, list[Doc]], env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # envFrom hands the ConfigMap to the process as variables at start-up.
    _only_these_variables(monkeypatch, _data(rendered[env]))
    settings = load_settings()
    _check(settings, env)


@pytest.mark.parametrize("env", ENVS)
def test_the_service_reloads_the_rendered_configmap(
    rendered: dict[str, list[Doc]], env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same keys as files in the mounted directory, read by the running service.
    _only_these_variables(monkeypatch, {})
    for key, value in _data(rendered[env]).items():
        (tmp_path / key).write_text(value)
    start = Settings(allowed_origins_file=str(tmp_path / "APP_ALLOWED_ORIGINS"))
    applied: list[Settings] = []
    results: list[str] = []
    watcher = ConfigWatcher(
        start, applied.append, logger=logging.getLogger("test"), count=results.append
    )
    asyncio.run(watcher.check())
    assert results == ["applied"], results
    _check(applied[-1], env)


def _check(settings: Settings, env: str) -> None:
    config = load_values(env)["config"]
    limits = config["rateLimit"]
    assert settings.rate_limit_mode == limits["mode"]
    assert settings.rate_limit_shadow_routes == limits["shadowRoutes"]
    assert settings.rate_limit_routes == limits["routes"]
    assert settings.rate_limit_exempt_cidrs == [
        str(ipaddress.ip_network(cidr, strict=False)) for cidr in limits["exemptCIDRs"]
    ]
    assert settings.cross_site_policy == config["crossSitePolicy"]
    assert settings.rate_limit_default == limits["default"]
    assert settings.rate_limit_search == limits["search"]


def test_the_route_map_renders_the_same_in_any_order() -> None:
    # Map order in the values must not matter (toJson sorts the keys): otherwise the file
    # would change, and every pod reload its policy, on an upgrade that changed nothing.
    first = render(
        "default", "--set-json", 'config.rateLimit.routes={"/a":"1/second","/b":"2/second"}'
    )
    second = render(
        "default", "--set-json", 'config.rateLimit.routes={"/b":"2/second","/a":"1/second"}'
    )
    expected = '{"/a":"1/second","/b":"2/second"}'
    assert (
        _data(first)["APP_RATE_LIMIT_ROUTES"] == _data(second)["APP_RATE_LIMIT_ROUTES"] == expected
    )


@pytest.mark.parametrize("env", ENVS)
def test_exempt_networks_stay_outside_the_trusted_proxies(env: str) -> None:
    # The exemption matches the client IP after proxy trust; a proxy's own address in an
    # exempt range would exempt whatever reached the API without a forwarded client IP.
    values = load_values(env)
    proxies = [ipaddress.ip_network(cidr) for cidr in values["proxy"]["trustedCIDRs"]]
    for cidr in values["config"]["rateLimit"]["exemptCIDRs"]:
        exempt = ipaddress.ip_network(cidr, strict=False)
        overlapping = [
            str(p) for p in proxies if p.version == exempt.version and p.overlaps(exempt)
        ]
        assert not overlapping, f"{env}: exempt {cidr} overlaps trusted proxies {overlapping}"
