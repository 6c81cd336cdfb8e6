"""The pod template's `checksum/config` rolls the pods only for settings a running pod
cannot pick up. The service re-reads the allowlist and the rate-limit / cross-site policy
from the mounted ConfigMap (gatehouse.config_reload), so a change there must leave the pod
template alone; any other ConfigMap key must change it."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from gatehouse.config_reload import ORIGINS_KEY, POLICY_KEYS

from .conftest import API, CHART, Doc, find, one, render

RELOADABLE = (ORIGINS_KEY, *POLICY_KEYS)

# ConfigMap key -> a `helm template` flag pair that changes only (or at least) that key.
RELOADABLE_CHANGES: dict[str, tuple[str, str]] = {
    "APP_ALLOWED_ORIGINS": ("--set", "config.allowedOrigins={https://other.example}"),
    "APP_RATE_LIMIT_DEFAULT": ("--set", "config.rateLimit.default=10/second;100/minute"),
    "APP_RATE_LIMIT_SEARCH": ("--set", "config.rateLimit.search=5/minute"),
    "APP_RATE_LIMIT_ALGORITHM": ("--set", "config.rateLimit.algorithm=gcra"),
    "APP_RATE_LIMIT_MODE": ("--set", "config.rateLimit.mode=shadow"),
    "APP_RATE_LIMIT_SHADOW_ROUTES": ("--set-json", 'config.rateLimit.shadowRoutes=["/search"]'),
    "APP_RATE_LIMIT_ROUTES": ("--set-json", 'config.rateLimit.routes={"/search":"5/minute"}'),
    "APP_RATE_LIMIT_EXEMPT_CIDRS": (
        "--set-json",
        'config.rateLimit.exemptCIDRs=["10.64.200.0/24"]',
    ),
    "APP_CROSS_SITE_POLICY": ("--set", "config.crossSitePolicy=shadow"),
}
RESTART_CHANGES: dict[str, tuple[str, str]] = {
    "APP_ENVIRONMENT": ("--set", "config.environment=prod"),
    "APP_TRUSTED_HOSTS": ("--set", "config.trustedHosts={api.other.example}"),
    "APP_HTTPS_REDIRECT": ("--set", "config.httpsRedirect=true"),
    "APP_DOCS_ENABLED": ("--set", "config.docsEnabled=true"),
    "APP_REFERRER_POLICY": ("--set", "config.referrerPolicy=strict-origin-when-cross-origin"),
    "APP_CORS_MAX_AGE": ("--set", "config.corsMaxAge=60"),
    "APP_CORS_DEBUG_ORIGINS": ("--set", "config.corsDebugOrigins={https://app.example.com}"),
    "APP_LOG_LEVEL": ("--set", "config.logLevel=debug"),
    "APP_REDIS_TIMEOUT": ("--set-json", "config.redisTimeout=0.5"),
    "APP_RATE_LIMIT_FAILURE_MODE": ("--set", "config.rateLimit.failureMode=closed"),
    "APP_RATE_LIMIT_HEADERS_DRAFT": ("--set-string", "config.rateLimit.headersDraft=07"),
    "APP_MAX_BODY_BYTES": ("--set", "config.limits.maxBodyBytes=2048"),
    "APP_MAX_BODY_BYTES_ROUTES": (
        "--set-json",
        'config.limits.maxBodyBytesRoutes={"/items":16384}',
    ),
    "APP_BODY_TIMEOUT": ("--set", "config.limits.bodyTimeoutSeconds=10"),
    "APP_MAX_HEADER_BYTES": ("--set", "config.limits.maxHeaderBytes=16384"),
    "APP_HEADER_TIMEOUT": ("--set", "config.limits.headerTimeoutSeconds=5"),
    "APP_REDIS_URL": ("--set", "fullnameOverride=edge"),
}


def _api(docs: list[Doc], kind: str) -> Doc:
    # By component, not name: one case changes the fullname.
    (doc,) = [
        d
        for d in find(docs, kind)
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    ]
    return doc


def _checksum(docs: list[Doc]) -> str:
    annotations = _api(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    return str(annotations["checksum/config"])


def _data(docs: list[Doc]) -> dict[str, str]:
    return dict(_api(docs, "ConfigMap")["data"])


@pytest.fixture(scope="module")
def changed() -> dict[str, list[Doc]]:
    """Every change above rendered once, in parallel (helm is mostly start-up time)."""
    cases = {**RELOADABLE_CHANGES, **RESTART_CHANGES}
    with ThreadPoolExecutor(max_workers=4) as pool:
        docs = pool.map(lambda flags: render("default", *flags), cases.values())
        return dict(zip(cases, docs, strict=True))


def test_the_charts_reloadable_keys_are_the_services() -> None:
    # The chart cannot import the module: it keeps its own list, which must not drift.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    match = re.search(
        r'define "gatehouse\.reloadableConfigKeys" -}}\n(.*?)\n\{\{- end', helpers, re.S
    )
    assert match, "_helpers.tpl has no gatehouse.reloadableConfigKeys"
    assert match.group(1).split() == list(RELOADABLE)


def test_every_configmap_key_is_classified(rendered: dict[str, list[Doc]]) -> None:
    # A new ConfigMap key must be placed on one side: reloaded, or rolls the pods.
    keys = set(one(rendered["default"], "ConfigMap", API)["data"])
    assert set(RELOADABLE_CHANGES) == set(RELOADABLE)
    assert keys == set(RELOADABLE_CHANGES) | set(RESTART_CHANGES)


@pytest.mark.parametrize("key", list(RELOADABLE_CHANGES))
def test_a_reloadable_change_keeps_the_pods(
    rendered: dict[str, list[Doc]], changed: dict[str, list[Doc]], key: str
) -> None:
    before, after = rendered["default"], changed[key]
    assert _data(after)[key] != _data(before)[key], "the change did not reach the ConfigMap"
    assert _checksum(after) == _checksum(before)


def test_all_reloadable_changes_at_once_keep_the_pods(rendered: dict[str, list[Doc]]) -> None:
    flags = [arg for pair in RELOADABLE_CHANGES.values() for arg in pair]
    after = render("default", *flags)
    changed_keys = {k for k, v in _data(after).items() if _data(rendered["default"])[k] != v}
    assert changed_keys == set(RELOADABLE)
    assert _checksum(after) == _checksum(rendered["default"])


@pytest.mark.parametrize("key", list(RESTART_CHANGES))
def test_a_setting_that_needs_a_restart_rolls_the_pods(
    rendered: dict[str, list[Doc]], changed: dict[str, list[Doc]], key: str
) -> None:
    before, after = rendered["default"], changed[key]
    assert _data(after)[key] != _data(before)[key], "the change did not reach the ConfigMap"
    assert _checksum(after) != _checksum(before)


def test_the_checksum_is_stable(rendered: dict[str, list[Doc]]) -> None:
    assert _checksum(render("default")) == _checksum(rendered["default"])
