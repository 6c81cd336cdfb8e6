"""skaffold.yaml: valid against Skaffold's v4beta14 schema, and wired to this repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

SKAFFOLD = ROOT / "skaffold.yaml"
SCHEMA = Path("/work/shared/schemas/skaffold-v4beta14.json")
ENVIRONMENTS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


def profile(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in config["profiles"] if p["name"] == name)


def releases(section: dict[str, Any]) -> list[dict[str, Any]]:
    return section["deploy"]["helm"]["releases"]


def test_valid_against_the_schema(config) -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed in .venv (uv add --dev jsonschema)"
    )
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is missing")
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors
    )


def test_api_version(config) -> None:
    assert config["apiVersion"] == "skaffold/v4beta14"
    assert config["kind"] == "Config"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_profile_per_environment(config, env) -> None:
    (release,) = releases(profile(config, env))
    assert release["namespace"] == f"gatehouse-{env}"
    assert release["valuesFiles"] == [f"k8s/values-{env}.yaml"]
    assert (ROOT / release["valuesFiles"][0]).is_file()
    assert release["chartPath"] == "charts/gatehouse"
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()


def test_image_matches_the_charts_repository(config) -> None:
    chart_values = yaml.safe_load((ROOT / "charts/gatehouse/values.yaml").read_text())
    repository = chart_values["image"]["repository"]
    sections = [config, *(profile(config, env) for env in ENVIRONMENTS)]
    for section in sections:
        for artifact in section.get("build", {}).get("artifacts", []):
            assert artifact["image"] == repository
            assert artifact["docker"]["dockerfile"] == "services/api/Dockerfile"
            assert (
                ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]
            ).is_file()
        if "deploy" not in section:
            continue
        for release in releases(section):
            templates = release["setValueTemplates"]
            variable = repository.replace("-", "_")
            assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{variable}}}}}"
            assert templates["image.tag"] == f"{{{{.IMAGE_TAG_{variable}}}}}"


def test_dev_profile_syncs_sources_into_the_dev_target(config) -> None:
    dev = profile(config, "dev")
    (artifact,) = dev["build"]["artifacts"]
    assert artifact["docker"]["target"] == "dev"
    (rule,) = artifact["sync"]["manual"]
    assert rule["src"] == "services/api/src/gatehouse/**/*.py"
    assert {"command": "dev"} in dev["activation"]
    (forward,) = dev["portForward"]
    assert forward["resourceType"] == "service"
    assert forward["namespace"] == "gatehouse-dev"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_verify_runs_the_probe_in_the_cluster(config, env) -> None:
    chart_values = yaml.safe_load((ROOT / "charts/gatehouse/values.yaml").read_text())
    client = chart_values["networkPolicy"]["clientLabel"]
    env_values = yaml.safe_load((ROOT / f"k8s/values-{env}.yaml").read_text())
    cases = profile(config, env)["verify"]
    assert cases
    verdicts = set()
    for case in cases:
        container = case["container"]
        assert container["image"] == chart_values["image"]["repository"]
        command = [*container.get("command", []), *container.get("args", [])]
        assert command[:3] == ["python", "-m", "gatehouse.probe"]
        url = command[command.index("--url") + 1]
        assert url.startswith(f"http://gatehouse.gatehouse-{env}.svc.cluster.local/")
        verdict = command[command.index("--expect") + 1]
        verdicts.add(verdict)
        if verdict == "allowed":
            assert command[command.index("--origin") + 1] in env_values["config"]["allowedOrigins"]
        job = json.loads(case["executionMode"]["kubernetesCluster"]["overrides"])
        assert job["metadata"]["namespace"] == f"gatehouse-{env}"
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels[client["key"]] == client["value"]
    assert "allowed" in verdicts
