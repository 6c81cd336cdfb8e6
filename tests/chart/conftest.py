"""Fixtures for the chart layer: helm renders once per environment, shared by every test.

Needs only the helm binary (scripts/helm finds or fetches it) and the project venv; no
cluster. The rendered documents are parsed with PyYAML and keyed by environment name.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gatehouse"
HELM = ROOT / "scripts" / "helm"
K8S = ROOT / "k8s"

# Environment name -> (values file or None for the chart defaults, namespace).
ENVIRONMENTS: dict[str, tuple[Path | None, str]] = {
    "default": (None, "gatehouse-dev"),
    "dev": (K8S / "values-dev.yaml", "gatehouse-dev"),
    "staging": (K8S / "values-staging.yaml", "gatehouse-staging"),
    "prod": (K8S / "values-prod.yaml", "gatehouse-prod"),
    "local": (K8S / "values-local.yaml", "gatehouse-local-a"),
    "local-b": (K8S / "values-local-b.yaml", "gatehouse-local-b"),
}
RELEASE = "gatehouse"
# The release name contains the chart name, so the fullname is the release name.
API = RELEASE
REDIS = f"{RELEASE}-redis"

Doc = dict[str, Any]

# networkPolicy.ingressController.preset -> the peer it must admit: where each controller's
# own chart puts its proxying pods, and the labels they carry (stated here independently of
# the chart's _helpers.tpl, so a typo there fails the tests).
CONTROLLER_PRESETS: dict[str, Doc] = {
    "traefik": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}},
    },
    "envoy-gateway": {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "envoy-gateway-system"}
        },
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "envoy",
                "app.kubernetes.io/component": "proxy",
                "app.kubernetes.io/managed-by": "envoy-gateway",
            }
        },
    },
    "ingress-nginx": {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "ingress-nginx",
                "app.kubernetes.io/component": "controller",
            }
        },
    },
}


def expected_controller_peer(values: Doc) -> Doc:
    """The ingress controller peer the values ask for: the preset's selectors, each replaced
    by an explicit (non-empty) one."""
    controller = values["networkPolicy"]["ingressController"]
    preset = CONTROLLER_PRESETS.get(controller["preset"], {})
    return {
        "namespaceSelector": controller.get("namespaceSelector") or preset["namespaceSelector"],
        "podSelector": controller.get("podSelector") or preset.get("podSelector", {}),
    }


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/helm, capturing output; never raises on a non-zero exit."""
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=False, timeout=120
    )


def values_args(env: str) -> list[str]:
    values_file, namespace = ENVIRONMENTS[env]
    args = ["--namespace", namespace]
    if values_file is not None:
        args += ["-f", str(values_file)]
    return args


def render(env: str, *extra: str) -> list[Doc]:
    """helm template for an environment (plus extra flags); fails the test on a helm error."""
    result = helm("template", RELEASE, str(CHART), *values_args(env), *extra)
    if result.returncode != 0:
        pytest.fail(f"helm template ({env} {' '.join(extra)}) failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_values(env: str) -> Doc:
    """The effective values of an environment: chart defaults with the env file merged in."""
    merged: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    values_file = ENVIRONMENTS[env][0]
    if values_file is not None:
        _merge(merged, yaml.safe_load(values_file.read_text()) or {})
    return merged


def _merge(base: Doc, override: Doc) -> None:
    # Helm's rule: maps merge key by key, anything else (lists included) replaces.
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Doc]]:
    """Every environment rendered once, in parallel (helm is mostly start-up time)."""
    with ThreadPoolExecutor(max_workers=len(ENVIRONMENTS)) as pool:
        docs = dict(zip(ENVIRONMENTS, pool.map(render, ENVIRONMENTS), strict=True))
    return docs


@pytest.fixture(scope="session")
def rendered_text(rendered: dict[str, list[Doc]]) -> dict[str, str]:
    return {env: yaml.safe_dump_all(docs, sort_keys=False) for env, docs in rendered.items()}


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    return [
        d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(label, pod spec) for every workload and bare Pod in the rendered docs."""
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc["spec"]
        elif kind in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
            yield f"{kind}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
