"""The files around the chart: namespaces, environment values files and the chart README."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ENVIRONMENTS, K8S

ENV_FILES = [path for path, _ in ENVIRONMENTS.values() if path is not None]


VERIFY_NAMESPACE = "gatehouse-verify"
# The named environments Skaffold deploys (skaffold.yaml profiles).
SKAFFOLD_ENVS = ("dev", "staging", "prod")


def _namespaces() -> dict[str, dict[str, str]]:
    docs = [d for d in yaml.safe_load_all((K8S / "namespaces.yaml").read_text()) if d]
    return {d["metadata"]["name"]: d["metadata"]["labels"] for d in docs}


def test_namespaces_enforce_restricted() -> None:
    namespaces = _namespaces()
    assert set(namespaces) == {
        "gatehouse-dev",
        "gatehouse-staging",
        "gatehouse-prod",
        VERIFY_NAMESPACE,
    }
    for name, labels in namespaces.items():
        if name != VERIFY_NAMESPACE:
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted", name


def test_verify_namespace_enforces_baseline_and_reports_restricted() -> None:
    # Skaffold's verify container has no securityContext: "baseline" is the most it can meet.
    labels = _namespaces()[VERIFY_NAMESPACE]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"


@pytest.mark.parametrize("env", SKAFFOLD_ENVS)
def test_environment_admits_the_verify_namespace(env: str) -> None:
    overrides = yaml.safe_load((K8S / f"values-{env}.yaml").read_text())
    assert overrides["networkPolicy"]["clientNamespaces"] == [VERIFY_NAMESPACE]


@pytest.mark.parametrize("path", sorted(K8S.glob("values-*.yaml")), ids=lambda p: p.name)
def test_no_environment_file_enables_dev_mode(path: Path) -> None:
    # devMode (uvicorn --reload, writable root) is for `skaffold dev` only, set by skaffold.yaml.
    overrides = yaml.safe_load(path.read_text()) or {}
    assert "devMode" not in overrides, f"{path.name} sets devMode"


def test_dev_runs_the_locally_loaded_image() -> None:
    # `make image` tags gatehouse-api:dev and kind loads that tag.
    overrides = yaml.safe_load((K8S / "values-dev.yaml").read_text())
    assert overrides["image"]["tag"] == "dev"


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_environment_file_opens_with_what_it_changes(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and len(first) > 30, first


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_environment_file_holds_only_overrides(path: Path) -> None:
    # A key repeated with the default's value is noise that hides the real differences,
    # except what every environment states on purpose: its replica count and proxy CIDRs.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overrides = yaml.safe_load(path.read_text())
    stated = {"replicaCount", "proxy"}
    same = [k for k in overrides if k not in stated and overrides[k] == defaults.get(k)]
    assert not same, f"{path.name} repeats defaults for {same}"


@pytest.mark.parametrize("path", ENV_FILES, ids=[p.name for p in ENV_FILES])
def test_environment_file_states_replicas_and_cidrs(path: Path) -> None:
    overrides = yaml.safe_load(path.read_text())
    assert "replicaCount" in overrides or overrides.get("autoscaling", {}).get("enabled")
    assert overrides["proxy"]["trustedCIDRs"]
    assert overrides["config"]["allowedOrigins"]
    assert overrides["config"]["trustedHosts"]


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for key, value in values.items():
        if f"`{key}" not in readme:
            missing.append(key)
        if isinstance(value, dict):
            missing += [f"{key}.{sub}" for sub in value if f"{sub}" not in readme]
    assert not missing, f"README.md values table lacks {missing}"


def test_edge_settings_preserve_the_client_ip() -> None:
    nginx = yaml.safe_load((K8S / "ingress" / "ingress-nginx-values.yaml").read_text())
    controller = nginx["controller"]
    assert controller["service"]["externalTrafficPolicy"] == "Local"
    # Trusting incoming X-Forwarded-* behind an L4 balancer would let clients pick their IP.
    assert controller["config"]["use-forwarded-headers"] == "false"
    assert controller["config"]["compute-full-forwarded-for"] == "true"

    gateway = {
        d["kind"]: d
        for d in yaml.safe_load_all((K8S / "gateway" / "envoy-gateway.yaml").read_text())
        if d
    }
    envoy_service = gateway["EnvoyProxy"]["spec"]["provider"]["kubernetes"]["envoyService"]
    assert envoy_service["externalTrafficPolicy"] == "Local"
    xff = gateway["ClientTrafficPolicy"]["spec"]["clientIPDetection"]["xForwardedFor"]
    assert xff["numTrustedHops"] == 0
    prod_route = yaml.safe_load((K8S / "values-prod.yaml").read_text())["httpRoute"]
    (parent,) = prod_route["parentRefs"]
    assert parent["name"] == gateway["Gateway"]["metadata"]["name"]
    assert parent["namespace"] == gateway["Gateway"]["metadata"]["namespace"]
    listeners = {item["name"] for item in gateway["Gateway"]["spec"]["listeners"]}
    assert parent["sectionName"] in listeners
