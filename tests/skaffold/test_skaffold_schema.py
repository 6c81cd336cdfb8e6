"""skaffold.yaml: valid against Skaffold's v4beta14 schema, and wired to this repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers import ROOT

SKAFFOLD = ROOT / "skaffold.yaml"
# shared/ lies beside the project's checkout (CI copies it beside its clone).
SCHEMA = next(
    (
        path
        for path in (
            ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json",
            Path("/work/shared/schemas/skaffold-v4beta14.json"),
        )
        if path.is_file()
    ),
    ROOT.parent / "shared" / "schemas" / "skaffold-v4beta14.json",
)
ENVIRONMENTS = ("dev", "staging", "prod")
VERIFY_NAMESPACE = "gatehouse-verify"
STAGE = ["scripts/build-image", "--stage-only"]


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
        # Not the release namespace: Skaffold's container cannot pass "restricted" there.
        assert job["metadata"]["namespace"] == VERIFY_NAMESPACE
        assert job["spec"]["backoffLimit"] == 0
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert labels[client["key"]] == client["value"]
    assert "allowed" in verdicts
    assert VERIFY_NAMESPACE in env_values["networkPolicy"]["clientNamespaces"]


def test_verify_job_names_are_unique() -> None:
    # A case's name is its Job's name, and every environment's Jobs share one namespace.
    config = yaml.safe_load(SKAFFOLD.read_text())
    names = [case["name"] for env in ENVIRONMENTS for case in profile(config, env)["verify"]]
    assert len(names) == len(set(names)), names


def _artifact_sections(config: dict[str, Any]) -> list[dict[str, Any]]:
    sections = [config, *(profile(config, env) for env in ENVIRONMENTS)]
    return [s["build"] for s in sections if "build" in s]


def test_every_artifact_stages_its_context_before_the_build(config) -> None:
    # The root .dockerignore admits only what scripts/build-image stages in build/image/.
    builds = _artifact_sections(config)
    assert builds
    for build in builds:
        for artifact in build["artifacts"]:
            (hook,) = artifact["hooks"]["before"]
            assert hook["command"] == STAGE
            assert {"linux", "darwin"} <= set(hook["os"])
        # No buildx plugin for the docker client here: the legacy builder, or Docker's default.
        assert build["local"].get("useBuildkit") in (False, None)
    script = ROOT / STAGE[0]
    assert os.access(script, os.X_OK)
    assert "--stage-only" in script.read_text()


def test_build_image_refuses_unknown_arguments() -> None:
    # The argument check runs before anything else (no docker, no network).
    result = subprocess.run(
        [str(ROOT / STAGE[0]), "--no-such-flag"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--stage-only" in result.stderr


def test_only_the_dev_profile_sets_dev_mode(config) -> None:
    sections = {"default": config, **{env: profile(config, env) for env in ENVIRONMENTS}}
    for name, section in sections.items():
        for release in releases(section):
            set_values = release.get("setValues", {})
            if name == "dev":
                assert set_values == {"devMode.enabled": True}
            else:
                assert not any(key.startswith("devMode") for key in set_values), name


def _render(release: dict[str, Any]) -> list[dict[str, Any]]:
    """The release as Skaffold would install it, with stand-ins for the image templates."""
    args = ["template", release["name"], str(ROOT / release["chartPath"])]
    args += ["--namespace", release["namespace"]]
    for values_file in release["valuesFiles"]:
        args += ["-f", str(ROOT / values_file)]
    stand_ins = {"image.repository": "gatehouse-api", "image.tag": "skaffold"}
    for key in release.get("setValueTemplates", {}):
        args += ["--set", f"{key}={stand_ins[key]}"]
    for key, value in release.get("setValues", {}).items():
        args += ["--set", f"{key}={json.dumps(value) if isinstance(value, bool) else value}"]
    result = subprocess.run(
        [str(ROOT / "scripts" / "helm"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _admits(peer: dict[str, Any], namespace: str, labels: dict[str, str], own: str) -> bool:
    """Whether a NetworkPolicy peer (podSelector/namespaceSelector) admits such a pod."""
    pod_selector = peer.get("podSelector")
    if pod_selector is None or not pod_selector.get("matchLabels", {}).items() <= labels.items():
        return False
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        return namespace == own
    names = {"kubernetes.io/metadata.name": namespace}
    if not namespace_selector.get("matchLabels", {}).items() <= names.items():
        return False
    for expression in namespace_selector.get("matchExpressions", []):
        value = names.get(expression["key"])
        if expression["operator"] != "In" or value not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_release_answers_its_verify_jobs(config, env) -> None:
    section = profile(config, env)
    (release,) = releases(section)
    docs = _render(release)
    name = release["name"]
    namespace = release["namespace"]
    trusted = _one(docs, "ConfigMap", name)["data"]["APP_TRUSTED_HOSTS"].split(",")
    service = _one(docs, "Service", name)
    policy = _one(docs, "NetworkPolicy", name)["spec"]
    for case in section["verify"]:
        args = case["container"]["args"]
        url = urlsplit(args[args.index("--url") + 1])
        # The probe's Host header is the URL's host: the Host check must accept it.
        assert url.hostname in trusted, (url.hostname, trusted)
        assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
        assert (url.port or 80) == service["spec"]["ports"][0]["port"]
        job = json.loads(case["executionMode"]["kubernetesCluster"]["overrides"])
        labels = job["spec"]["template"]["metadata"]["labels"]
        peers = [p for rule in policy["ingress"] for p in rule["from"]]
        assert any(_admits(p, job["metadata"]["namespace"], labels, namespace) for p in peers)
        # Without the client label the same pod is refused.
        assert not any(_admits(p, job["metadata"]["namespace"], {}, namespace) for p in peers)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dev_mode_renders_only_for_skaffold_dev(config, env) -> None:
    (release,) = releases(profile(config, env))
    deployment = _one(_render(release), "Deployment", release["name"])
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    reload = "--reload" in api["args"]
    writable = api["securityContext"]["readOnlyRootFilesystem"] is False
    assert reload == writable == (env == "dev")
