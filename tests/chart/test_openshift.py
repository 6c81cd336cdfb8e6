"""OpenShift's restricted SCCs assign each namespace's uid and gid and refuse a pod that
names its own: with runAsUser/runAsGroup null the API and helm test pods name none, and
still require a non-root user."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from .conftest import API, CHART, REDIS, RELEASE, Doc, find, helm, one, render

IDENTITY_KEYS = ("runAsUser", "runAsGroup", "fsGroup")


def _ours(docs: list[Doc]) -> list[tuple[str, Doc]]:
    """(label, pod spec) of the API Deployment and the helm test pods (Redis has its own values)."""
    specs = [("Deployment/api", one(docs, "Deployment", API)["spec"]["template"]["spec"])]
    specs += [(f"Pod/{p['metadata']['name']}", p["spec"]) for p in find(docs, "Pod")]
    return specs


@pytest.fixture(scope="module", params=["values-file", "set-null"])
def openshift(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[Doc]:
    if request.param == "values-file":
        path: Path = tmp_path_factory.mktemp("openshift") / "openshift.yaml"
        path.write_text("runAsUser: null\nrunAsGroup: null\n")
        return render("default", "-f", str(path))
    return render("default", "--set", "runAsUser=null", "--set", "runAsGroup=null")


def test_no_uid_gid_or_fsgroup_is_named(openshift: list[Doc]) -> None:
    specs = _ours(openshift)
    assert len(specs) == 5  # the Deployment and four test pods
    for label, spec in specs:
        contexts = [spec["securityContext"]] + [c["securityContext"] for c in spec["containers"]]
        for context in contexts:
            named = [k for k in IDENTITY_KEYS if k in context]
            assert not named, f"{label}: {named}"


def test_non_root_and_the_rest_of_restricted_stay(openshift: list[Doc]) -> None:
    for label, spec in _ours(openshift):
        assert spec["securityContext"]["runAsNonRoot"] is True, label
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, label
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, label
            assert context["allowPrivilegeEscalation"] is False, label
            assert context["capabilities"] == {"drop": ["ALL"]}, label


def test_the_default_names_the_images_user(rendered: dict[str, list[Doc]]) -> None:
    # The contrast: without the null values every identity key is there.
    for label, spec in _ours(rendered["default"]):
        assert spec["securityContext"]["runAsUser"] == 10001, label
        assert spec["securityContext"]["runAsGroup"] == 10001, label
        for container in spec["containers"]:
            assert container["securityContext"]["runAsUser"] == 10001, label
    deployment = one(rendered["default"], "Deployment", API)["spec"]["template"]["spec"]
    assert deployment["securityContext"]["fsGroup"] == 10001


def test_root_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.yaml"
    path.write_text(yaml.safe_dump({"runAsUser": 0}))
    result = helm("template", RELEASE, str(CHART), "-f", str(path))
    assert result.returncode != 0
    assert "/runAsUser" in result.stderr


def test_redis_names_no_uid_either_when_its_values_are_null() -> None:
    docs = render("default", "--set", "redis.runAsUser=null", "--set", "redis.runAsGroup=null")
    spec = one(docs, "Deployment", REDIS)["spec"]["template"]["spec"]
    contexts = [spec["securityContext"]] + [c["securityContext"] for c in spec["containers"]]
    for context in contexts:
        assert not [k for k in IDENTITY_KEYS if k in context], context
        assert context["runAsNonRoot"] is True
    # The contrast: by default Redis runs as its own image's user.
    default = one(render("default"), "Deployment", REDIS)["spec"]["template"]["spec"]
    assert (default["securityContext"]["runAsUser"], default["securityContext"]["fsGroup"]) == (
        10002,
        10002,
    )
