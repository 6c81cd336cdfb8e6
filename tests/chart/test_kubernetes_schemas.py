"""Every rendered object validates against the Kubernetes API schemas, strict mode, at the
oldest and newest versions the chart claims (Chart.yaml kubeVersion .. newest shipped by
kubernetes-validate). Gateway API's HTTPRoute and the Prometheus Operator's ServiceMonitor
are CRDs, absent from those schemas: they are checked against the small structural schemas
in tests/chart/schemas/ instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .conftest import CHART, ENVIRONMENTS, Doc

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): SCHEMAS / "httproute-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-v1.json",
}


def _claimed_versions() -> list[str]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.match(r">=\s*(\d+\.\d+)", chart["kubeVersion"])
    assert match, f"kubeVersion {chart['kubeVersion']!r} has no lower bound"
    oldest = f"{match.group(1)}.0"
    shipped = sorted(set(kubernetes_validate.utils.all_versions()), key=_version_key)
    assert oldest in shipped, f"kubernetes-validate ships no schema for {oldest}"
    return [oldest, shipped[-1]]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


VERSIONS = _claimed_versions()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_objects_validate(rendered: dict[str, list[Doc]], env: str, version: str) -> None:
    errors = []
    for doc in rendered[env]:
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.utils.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("env", list(ENVIRONMENTS))
def test_crd_objects_validate(rendered: dict[str, list[Doc]], env: str) -> None:
    known = {(d["apiVersion"], d["kind"]) for d in rendered[env]}
    for doc in rendered[env]:
        schema_file = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if schema_file is not None:
            jsonschema.validate(doc, json.loads(schema_file.read_text()))
    # Any other custom kind would slip through both checks: refuse it here.
    core = {
        "v1",
        "apps/v1",
        "batch/v1",
        "networking.k8s.io/v1",
        "policy/v1",
        "autoscaling/v2",
        "rbac.authorization.k8s.io/v1",
    }
    unknown = {k for k in known if k[0] not in core and k not in CRD_SCHEMAS}
    assert not unknown, f"no schema for {unknown}"


@pytest.mark.parametrize("kind", ["HTTPRoute", "ServiceMonitor"])
def test_prod_renders_each_custom_kind(rendered: dict[str, list[Doc]], kind: str) -> None:
    # Guards the CRD check above against silently checking nothing.
    assert any(d["kind"] == kind for d in rendered["prod"])


def test_the_servicemonitor_schema_refuses_a_bad_interval(rendered: dict[str, list[Doc]]) -> None:
    # The structural schema must be able to fail: the same object with a Go-style duration
    # the operator refuses ("1m30s" passes, "90 seconds" does not).
    (monitor,) = [d for d in rendered["prod"] if d["kind"] == "ServiceMonitor"]
    schema = json.loads(CRD_SCHEMAS[(monitor["apiVersion"], monitor["kind"])].read_text())
    good = {**monitor, "spec": {**monitor["spec"], "endpoints": [
        {**monitor["spec"]["endpoints"][0], "interval": "1m30s"}]}}  # fmt: skip
    jsonschema.validate(good, schema)
    bad = {**monitor, "spec": {**monitor["spec"], "endpoints": [
        {**monitor["spec"]["endpoints"][0], "interval": "90 seconds"}]}}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
