"""skaffold.yaml through Skaffold itself, without a cluster: the profiles as Skaffold applies
them, and the image each environment's release gets (`skaffold render`).

Needs the Skaffold the local cluster builds (python -m cluster build, or make cluster):
skipped with one line without it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster.layout import Layout

from tests.helpers import ROOT
from tests.skaffold.effective import effective
from tests.skaffold.tool import skaffold_binary, skaffold_env

SKAFFOLD = skaffold_binary()
pytestmark = pytest.mark.skipif(
    SKAFFOLD is None, reason="skaffold is not built: python -m cluster build (or make cluster)"
)
CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
# A pushed image as `skaffold build --file-output` records it: repository, tag and digest.
PUSHED_REPOSITORY = "registry.example.com/team/gatehouse-api"
PUSHED_DIGEST = "sha256:" + "5e" * 32
# An image kept in the local engine: Skaffold's tag is its image id, and there is no digest.
LOCAL_REFERENCE = "gatehouse-api:" + "a1" * 32


def skaffold(args: list[str], scratch: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SKAFFOLD), *args], cwd=ROOT, env=skaffold_env(scratch), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, f"skaffold {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    return done


def test_the_skaffold_built_here_is_the_pinned_release(tmp_path) -> None:
    # cluster/build.py's ldflags: unset, `skaffold version` prints an empty line.
    pinned = Layout.default().tool_versions["skaffold"]
    assert skaffold(["version"], tmp_path).stdout.strip() == pinned
    # The release reads skaffold.yaml's schema version as its own, not as an older one.
    listed = skaffold(["schema", "list"], tmp_path).stdout.split()
    assert CONFIG["apiVersion"] == listed[-1]


def _relative(path: str) -> str:
    return str(Path(path).relative_to(ROOT)) if path.startswith("/") else path


def _comparable(pipeline: dict[str, Any]) -> dict[str, Any]:
    """What the profiles decide, with Skaffold's absolute paths and defaults left out."""
    (artifact,) = pipeline["build"]["artifacts"]
    (release,) = pipeline["deploy"]["helm"]["releases"]
    return {
        "artifact": {
            "image": artifact["image"],
            "docker": artifact["docker"],
            "sync": artifact.get("sync"),
            "hooks": artifact.get("hooks"),
        },
        "push": pipeline["build"]["local"]["push"],
        "kubeContext": pipeline["deploy"].get("kubeContext"),
        "release": {
            "namespace": release["namespace"],
            "chartPath": _relative(release["chartPath"]),
            "valuesFiles": [_relative(path) for path in release["valuesFiles"]],
            # Skaffold holds setValues as strings.
            "setValues": {k: str(v).lower() for k, v in release.get("setValues", {}).items()},
            "setValueTemplates": release["setValueTemplates"],
        },
        "verify": [case["name"] for case in pipeline.get("verify", [])],
    }


@pytest.mark.parametrize(
    "names",
    [(), ("dev",), ("staging",), ("prod",), ("local",), ("dev", "local"), ("local", "dev")],
)
def test_skaffold_applies_the_profiles_as_the_schema_tests_read_them(names, tmp_path) -> None:
    # Only the named profiles, in the order given (no activation by command or context).
    args = ["diagnose", "--yaml-only", "--profile-auto-activation=false"]
    if names:
        args += ["--profile", ",".join(names)]
    (skaffolds,) = [doc for doc in yaml.safe_load_all(skaffold(args, tmp_path).stdout) if doc]
    assert _comparable(skaffolds) == _comparable(effective(CONFIG, *names))


def _images(rendered: str) -> list[str]:
    images = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") not in ("Deployment", "Pod", "Job"):
            continue
        spec = doc["spec"].get("template", {}).get("spec", doc["spec"])
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            images.append(container["image"])
    return images


def _render(profile_name: str | None, tag: str, scratch: Path) -> list[str]:
    built = scratch / "build.json"
    built.write_text(json.dumps({"builds": [{"imageName": "gatehouse-api", "tag": tag}]}))
    args = ["render", "--offline", "--profile-auto-activation=false",
            "--build-artifacts", str(built), "--digest-source", "tag"]  # fmt: skip
    if profile_name:
        args += ["--profile", profile_name]
    return _images(skaffold(args, scratch).stdout)


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_a_pushed_image_is_deployed_by_digest(env, tmp_path) -> None:
    images = _render(env, f"{PUSHED_REPOSITORY}:v1.2.3@{PUSHED_DIGEST}", tmp_path)
    api = [image for image in images if "gatehouse-api" in image]
    assert api, images
    # The digest wins over the tag: the nodes pull exactly the pushed bytes.
    assert set(api) == {f"{PUSHED_REPOSITORY}@{PUSHED_DIGEST}"}


def test_a_local_image_is_deployed_by_its_tag(tmp_path) -> None:
    images = _render(None, LOCAL_REFERENCE, tmp_path)
    api = [image for image in images if "gatehouse-api" in image]
    assert api and set(api) == {LOCAL_REFERENCE}


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_a_remote_profile_refuses_to_build_without_a_registry(env, tmp_path) -> None:
    # Stopped by the first hook, before anything is staged, built or pushed.
    done = subprocess.run(
        [str(SKAFFOLD), "build", "--profile", env, "--profile-auto-activation=false",
         "--cache-artifacts=false", "--tag", "no-registry"],
        cwd=ROOT, env=skaffold_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "name the registry with --default-repo" in output, output
    assert "Building [gatehouse-api]" in output and "Successfully built" not in output, output
