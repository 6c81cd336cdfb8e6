"""The files around the chart: namespaces, environment values files and the chart README."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ENVIRONMENTS, K8S

ENV_FILES = [path for path, _ in ENVIRONMENTS.values() if path is not None]


def test_namespaces_enforce_restricted() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "namespaces.yaml").read_text()) if d]
    names = {d["metadata"]["name"] for d in docs}
    assert names == {"gatehouse-dev", "gatehouse-staging", "gatehouse-prod"}
    for doc in docs:
        assert doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


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
