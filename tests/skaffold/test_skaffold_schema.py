"""skaffold.yaml: valid against Skaffold's v4beta14 schema, and wired to this repository."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cluster import configs

from tests.helpers import ROOT
from tests.skaffold.effective import effective, profile

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
# The profiles that deploy to a real environment: pushed, by digest, to a pinned context.
REMOTE = ("staging", "prod")
VERIFY_NAMESPACE = "gatehouse-verify"
STAGE = ["scripts/build-image", "--stage-only"]
# The local cluster's kube context (cluster/configs.py writes .cluster/kubeconfig with it).
LOCAL_CONTEXT = inspect.signature(configs.kubeconfig).parameters["context"].default
# Every way the profiles combine: alone, and dev on the local cluster (in both orders, as
# `skaffold dev` and `skaffold run -p dev` apply them).
COMBINATIONS = ((), ("dev",), ("staging",), ("prod",), ("local",), ("dev", "local"),
                ("local", "dev"))  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load(SKAFFOLD.read_text())


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
    (release,) = releases(effective(config, env))
    assert release["namespace"] == f"gatehouse-{env}"
    assert release["valuesFiles"] == [f"k8s/values-{env}.yaml"]
    assert (ROOT / release["valuesFiles"][0]).is_file()
    assert release["chartPath"] == "charts/gatehouse"
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()


@pytest.mark.parametrize("names", COMBINATIONS)
def test_image_matches_the_charts_repository(config, names) -> None:
    chart_values = yaml.safe_load((ROOT / "charts/gatehouse/values.yaml").read_text())
    repository = chart_values["image"]["repository"]
    for section in (effective(config, *names),):
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
            # Empty for an image kept in the local engine; the chart then uses the tag.
            assert templates["image.digest"] == f"{{{{.IMAGE_DIGEST_{variable}}}}}"


@pytest.mark.parametrize("names", [("dev",), ("dev", "local"), ("local", "dev")])
def test_dev_profile_syncs_sources_into_the_dev_target(config, names) -> None:
    dev = effective(config, *names)
    (artifact,) = dev["build"]["artifacts"]
    assert artifact["docker"]["target"] == "dev"
    (rule,) = artifact["sync"]["manual"]
    assert rule["src"] == "services/api/src/gatehouse/**/*.py"
    assert {"command": "dev"} in profile(config, "dev")["activation"]
    (forward,) = dev["portForward"]
    assert forward["resourceType"] == "service"
    assert forward["namespace"] == "gatehouse-dev"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_verify_runs_the_probe_in_the_cluster(config, env) -> None:
    chart_values = yaml.safe_load((ROOT / "charts/gatehouse/values.yaml").read_text())
    client = chart_values["networkPolicy"]["clientLabel"]
    env_values = yaml.safe_load((ROOT / f"k8s/values-{env}.yaml").read_text())
    cases = effective(config, env)["verify"]
    assert cases
    verdicts = set()
    for case in cases:
        container = case["container"]
        assert container["image"] == chart_values["image"]["repository"]
        command = [*container.get("command", []), *container.get("args", [])]
        assert command[:3] == ["python", "-m", "gatehouse.probe"]
        url = command[command.index("--url") + 1]
        assert url.startswith(f"http://gatehouse.gatehouse-{env}.svc.cluster.local/")
        # A NetworkPolicy agent admits a new pod's address a moment after it starts.
        assert float(command[command.index("--wait-reachable") + 1]) > 0
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
    names = [case["name"] for env in ENVIRONMENTS for case in effective(config, env)["verify"]]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("names", COMBINATIONS)
def test_every_artifact_stages_its_context_before_the_build(config, names) -> None:
    # The root .dockerignore admits only what scripts/build-image stages in build/image/.
    build = effective(config, *names)["build"]
    assert build["artifacts"]
    for artifact in build["artifacts"]:
        hook = artifact["hooks"]["before"][-1]
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


@pytest.mark.parametrize("names", COMBINATIONS)
def test_only_the_dev_profile_sets_dev_mode(config, names) -> None:
    for release in releases(effective(config, *names)):
        set_values = release.get("setValues", {})
        if "dev" in names:
            assert set_values == {"devMode.enabled": True}
        else:
            assert not any(key.startswith("devMode") for key in set_values), names


def _render(release: dict[str, Any]) -> list[dict[str, Any]]:
    """The release as Skaffold would install it, with stand-ins for the image templates."""
    args = ["template", release["name"], str(ROOT / release["chartPath"])]
    args += ["--namespace", release["namespace"]]
    for values_file in release["valuesFiles"]:
        args += ["-f", str(ROOT / values_file)]
    stand_ins = {"image.repository": "gatehouse-api", "image.tag": "skaffold", "image.digest": ""}
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
    section = effective(config, env)
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
    (release,) = releases(effective(config, env))
    deployment = _one(_render(release), "Deployment", release["name"])
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    reload = "--reload" in api["args"]
    writable = api["securityContext"]["readOnlyRootFilesystem"] is False
    assert reload == writable == (env == "dev")


@pytest.mark.parametrize("env", REMOTE)
def test_remote_profiles_push_and_deploy_by_digest_to_their_own_context(config, env) -> None:
    section = effective(config, env)
    assert section["build"]["local"]["push"] is True
    assert section["deploy"]["kubeContext"] == f"gatehouse-{env}"
    (release,) = releases(section)
    assert release["setValueTemplates"]["image.digest"] == "{{.IMAGE_DIGEST_gatehouse_api}}"


@pytest.mark.parametrize("env", REMOTE)
def test_remote_profiles_refuse_to_build_without_a_registry(config, env, tmp_path) -> None:
    # The first hook, run as Skaffold runs it (its environment carries SKAFFOLD_DEFAULT_REPO
    # when --default-repo is given): without one the image would be pushed to Docker Hub.
    (artifact,) = effective(config, env)["build"]["artifacts"]
    guard = artifact["hooks"]["before"][0]["command"]
    assert guard != STAGE
    bare = {k: v for k, v in os.environ.items() if k != "SKAFFOLD_DEFAULT_REPO"}
    refused = subprocess.run(guard, env=bare, cwd=tmp_path, capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert refused.returncode != 0
    assert "--default-repo" in refused.stderr
    given = {**bare, "SKAFFOLD_DEFAULT_REPO": "registry.example.com/team"}
    allowed = subprocess.run(guard, env=given, cwd=tmp_path, capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr


def test_the_local_profile_is_the_local_clusters_only(config) -> None:
    local = profile(config, "local")
    (activation,) = local["activation"]
    pattern = activation["kubeContext"]
    # Skaffold matches the pattern unanchored (re.search): it must not catch kind's context
    # for the same name, nor the real environments'.
    assert re.search(pattern, LOCAL_CONTEXT)
    for other in ("kind-gatehouse", "gatehouse-staging", "gatehouse-prod", "gatehouse-dev"):
        assert not re.search(pattern, other), other
    for names in (("local",), ("dev", "local"), ("local", "dev")):
        section = effective(config, *names)
        assert section["deploy"]["kubeContext"] == LOCAL_CONTEXT
        (release,) = releases(section)
        # The cluster's own values go last, over the environment's.
        assert release["valuesFiles"] == ["k8s/values-dev.yaml", "k8s/values-cluster.yaml"]
        (artifact,) = section["build"]["artifacts"]
        (load,) = artifact["hooks"]["after"]
        assert "python -m cluster load" in " ".join(load["command"])
        assert section["build"]["local"]["push"] is False


@pytest.mark.parametrize("names", [(), ("dev",), *((env,) for env in REMOTE)])
def test_only_the_local_profile_loads_into_the_local_cluster(config, names) -> None:
    section = effective(config, *names)
    (artifact,) = section["build"]["artifacts"]
    assert "after" not in artifact["hooks"]
    for release in releases(section):
        assert "k8s/values-cluster.yaml" not in release["valuesFiles"]


def test_profiles_that_share_the_lists_compose_in_either_order(config) -> None:
    # `skaffold dev` applies dev then local (file order); `skaffold run -p dev` local then
    # dev (named profiles come last). Both must give the same pipeline.
    assert effective(config, "dev", "local") == effective(config, "local", "dev")
    for name in ("dev", "local"):
        own = profile(config, name)
        assert "artifacts" not in own.get("build", {}), name
        assert "releases" not in own.get("deploy", {}).get("helm", {}), name


@pytest.mark.parametrize("names", COMBINATIONS)
def test_the_build_uses_the_base_the_wheels_were_staged_for(config, names) -> None:
    # No registry may serve the Dockerfile's default base: scripts/build-image then stages
    # for gatehouse-base:bookworm (Python 3.11), and Skaffold's build must use that base too.
    (artifact,) = effective(config, *names)["build"]["artifacts"]
    (base,) = artifact["docker"]["buildArgs"].values()
    assert artifact["docker"]["buildArgs"] == {"BASE_IMAGE": base}
    assert base.startswith('{{cmd "sh" "-c" "cat build/image/base-image 2>/dev/null || echo ')
    assert 'echo "$base" >"$stage/base-image"' in (ROOT / STAGE[0]).read_text()


@pytest.mark.parametrize("names", COMBINATIONS)
def test_the_build_has_no_network(config, names) -> None:
    # As scripts/build-image builds (--network=none): every input is staged beforehand.
    (artifact,) = effective(config, *names)["build"]["artifacts"]
    assert artifact["docker"]["network"] == "none"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_verify_container_names_are_unique(config, env) -> None:
    # Skaffold refuses a config whose verify cases share a container name.
    containers = [case["container"]["name"] for case in effective(config, env)["verify"]]
    assert len(containers) == len(set(containers)), containers
