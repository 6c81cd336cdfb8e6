"""skaffold.yaml for real on the local cluster: `skaffold run`, `skaffold verify` (passing,
and failing when its expectation cannot hold) and one `skaffold dev` edit.

Skaffold runs from a copy of the working tree (its tracked and unignored files), so the dev
test's edit never touches the checkout; the images it builds are loaded into the node by
skaffold.yaml's `local` profile, which the cluster's kube context activates. Everything
deployed is deleted at the end (Skaffold's own cleanup, then `skaffold delete`), and the
environment namespaces too when this module created them (tests/k8s, which runs first,
deletes its own at the end of the session).

Run: scripts/with-cluster .venv/bin/python -m pytest tests/skaffold -q -x
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster import addons

from tests.helpers import ROOT, wait_until
from tests.k8s.conftest import (
    ENV_NAMESPACES,
    KUBECTL,
    LOCAL_KUBECONFIG,
    Cluster,
    cluster_problem,
    namespace_exists,
    namespace_terminating,
    on_local_cluster,
    run,
)
from tests.skaffold.effective import effective
from tests.skaffold.tool import skaffold_binary, skaffold_env

pytestmark = pytest.mark.k8s

SKAFFOLD = skaffold_binary()
CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
NAMESPACE = "gatehouse-dev"
VERIFY_NAMESPACE = "gatehouse-verify"
API_PODS = "app.kubernetes.io/instance=gatehouse,app.kubernetes.io/component=api"
# The dev release's Ingress host (k8s/values-dev.yaml), served by the cluster's Traefik.
HOST = yaml.safe_load((ROOT / "k8s/values-dev.yaml").read_text())["config"]["trustedHosts"][0]
# A fixed tag: the copy has no git history for Skaffold's default gitCommit tagger.
TAG = "skaffold-test"
# Skaffold deploys an image it did not push as <name>:<image id>.
LOCAL_IMAGE = re.compile(r"^gatehouse-api:[0-9a-f]{64}$")
# The line the dev test adds to /whoami's answer, after this one of services/api/src.
EDITED_FILE = Path("services/api/src/gatehouse/app.py")
EDIT_ANCHOR = '"client_ip": client[0] if client else None,'
# The verify case that cannot pass (must_fail_config).
MUST_FAIL = "dev-must-fail"


def local_cluster_problem() -> str | None:
    if SKAFFOLD is None:
        return "skaffold is not built: python -m cluster build (or make cluster)"
    if not on_local_cluster():
        return (
            f"skaffold.yaml's local profile needs the local cluster (KUBECONFIG={LOCAL_KUBECONFIG})"
        )
    problem = cluster_problem()
    if problem:
        return f"no Kubernetes cluster: {problem}"
    if os.geteuid() != 0:
        return "loading images into the local cluster (python -m cluster load) needs root"
    return None


@dataclass
class Workspace:
    """The copy Skaffold runs in, with its environment and a log per command."""

    root: Path
    scratch: Path
    env: dict[str, str]

    def skaffold(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SKAFFOLD), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(
                f"skaffold {' '.join(args)} -> {done.returncode}\n{done.stdout[-4000:]}\n"
                f"{done.stderr[-4000:]}"
            )
        return done


def copy_working_tree(target: Path) -> None:
    """The checkout's tracked and unignored files as they are now (others' edits included)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split(b"\0")):
        relative = os.fsdecode(name)
        source = ROOT / relative
        if not source.is_file():  # deleted in the working tree, not yet in the index
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / relative)
    # The hooks run .venv/bin/python, and scripts/build-image reuses the wheels it has.
    (target / ".venv").symlink_to(ROOT / ".venv")
    wheelhouse = ROOT / "build" / "wheelhouse"
    if wheelhouse.is_dir():
        shutil.copytree(wheelhouse, target / "build" / "wheelhouse", copy_function=os.link)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    problem = local_cluster_problem()
    if problem:
        pytest.skip(problem)
    scratch = tmp_path_factory.mktemp("skaffold")
    root = scratch / "repo"
    copy_working_tree(root)
    # As on a fresh clone (skaffold.yaml): Skaffold lists the staged inputs before its hook.
    staged = subprocess.run([str(root / "scripts" / "build-image"), "--stage-only"], cwd=root,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert staged.returncode == 0, f"scripts/build-image --stage-only:\n{staged.stderr[-3000:]}"
    env = skaffold_env(
        scratch,
        # The copy's `python -m cluster load` acts on the running cluster's state.
        GATEHOUSE_CLUSTER_STATE=str(LOCAL_KUBECONFIG.parent),
        # A cache of this run's own: every image is built, so the load hook runs.
        SKAFFOLD_CACHE_FILE=str(scratch / "skaffold-cache"),
    )
    yield Workspace(root, scratch, env)


@pytest.fixture(scope="module")
def namespaces(workspace: Workspace) -> Iterator[Cluster]:
    """k8s/namespaces.yaml applied, as the README says; removed afterwards if made here."""
    cluster = Cluster(image="unused")
    # A namespace still being deleted (an earlier run's) refuses new objects: let it go first.
    deadline = time.monotonic() + 180
    while any(namespace_exists(cluster, name) and namespace_terminating(cluster, name)
              for name in ENV_NAMESPACES):  # fmt: skip
        assert time.monotonic() < deadline, "an earlier run's namespaces are still terminating"
        time.sleep(2)
    made = [name for name in ENV_NAMESPACES if not namespace_exists(cluster, name)]
    run([KUBECTL, "apply", "-f", str(ROOT / "k8s" / "namespaces.yaml")], timeout=60)
    cluster.created_namespaces.extend(made)
    yield cluster
    # Whatever a failed test left deployed (dev's own cleanup removes its release first).
    workspace.skaffold("delete", timeout=300, check=False)
    verify_jobs = [case["name"] for case in effective(CONFIG, "dev")["verify"]]
    run([KUBECTL, "delete", "jobs", "-n", VERIFY_NAMESPACE, "--ignore-not-found",
         "--wait=false", *verify_jobs, MUST_FAIL], check=False, timeout=60)  # fmt: skip
    cluster.cleanup()


def get(path: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    """GET through the cluster's Traefik (the host's NodePort), as the dev Ingress serves it."""
    request = urllib.request.Request(addons.traefik_host_url() + path, headers={"Host": HOST})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def wait_for_body(path: str, wanted: dict[str, Any], timeout: float) -> float:
    """Poll until a 200 carries every key/value of ``wanted``; returns when, monotonic."""
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        last = get(path)
        if last[0] == 200 and wanted.items() <= last[1].items():
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"GET {path} (Host {HOST}) never answered {wanted}: last {last}")


def api_pods(cluster: Cluster) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector=API_PODS, _request_timeout=10).items)  # fmt: skip


def ready(pod: Any) -> bool:
    conditions = pod.status.conditions or []
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in conditions
    )


def api_image(pod: Any) -> str:
    (api,) = [c for c in pod.spec.containers if c.name == "api"]
    return str(api.image)


@dataclass
class Deployed:
    image: str
    output: str


@pytest.fixture(scope="module")
def deployed(workspace: Workspace, namespaces: Cluster) -> Deployed:
    done = workspace.skaffold("run", "--tag", TAG)
    output = done.stdout + done.stderr
    pods = [pod for pod in api_pods(namespaces) if ready(pod)]
    images = {api_image(pod) for pod in pods}
    assert len(images) == 1, f"the ready API pods run {images or 'nothing'}\n{output[-3000:]}"
    return Deployed(images.pop(), output)


def test_skaffold_run_builds_loads_and_deploys_what_serves(
    deployed: Deployed, namespaces: Cluster
) -> None:
    # Skaffold's own image (not gatehouse-api:dev, which scripts/with-cluster loads), loaded
    # by the local profile's hook: the node had no registry to pull it from.
    assert LOCAL_IMAGE.match(deployed.image), deployed.image
    assert f"cluster: loaded {deployed.image} into the node" in deployed.output
    pods = api_pods(namespaces)
    assert len([pod for pod in pods if ready(pod)]) == 2  # k8s/values-cluster.yaml's replicas
    wait_for_body("/search?q=verify", {"query": "verify"}, timeout=60)


def must_fail_config(scratch: Path) -> Path:
    """A config whose only verify case expects the dev origin refused: it cannot hold."""
    allowed = next(case for case in effective(CONFIG, "dev")["verify"]
                   if "allowed" in case["container"]["args"])  # fmt: skip
    case = copy.deepcopy(allowed)
    case["name"] = case["container"]["name"] = MUST_FAIL
    args = case["container"]["args"]
    args[args.index("--expect") + 1] = "refused"
    path = scratch / "verify-must-fail.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": CONFIG["apiVersion"], "kind": "Config",
        "metadata": {"name": "gatehouse-verify-must-fail"}, "verify": [case],
    }))  # fmt: skip
    return path


def test_skaffold_verify_passes_and_fails_for_real(
    deployed: Deployed, workspace: Workspace
) -> None:
    built = workspace.scratch / "build.json"
    # The artifact is cached from `skaffold run`: this only records its reference.
    workspace.skaffold("build", "--tag", TAG, "--file-output", str(built), timeout=300)
    (artifact,) = json.loads(built.read_text())["builds"]
    assert artifact["tag"] == deployed.image
    passed = workspace.skaffold("verify", "--profile", "dev", "--build-artifacts", str(built))
    report = passed.stdout + passed.stderr
    for case in effective(CONFIG, "dev")["verify"]:
        args = case["container"]["args"]
        verdict = args[args.index("--expect") + 1]
        # Each Job ran the probe, whose own check passed (its output, relayed by Skaffold).
        assert f"[{case['name']}] ok   expect verdict {verdict}" in report, report[-3000:]
    failed = workspace.skaffold("verify", "--filename", str(must_fail_config(workspace.scratch)),
                                "--build-artifacts", str(built), check=False)  # fmt: skip
    report = failed.stdout + failed.stderr
    assert failed.returncode != 0, report[-3000:]
    # Failed for the probe's verdict (its Job ran and reported), not for a config error.
    assert f"[{MUST_FAIL}] FAIL expect verdict refused: verdict allowed" in report, report[-3000:]
    assert f'"{MUST_FAIL}" running job' in report, report[-3000:]


def test_skaffold_dev_syncs_a_saved_edit_into_the_running_pods(
    deployed: Deployed, workspace: Workspace, namespaces: Cluster
) -> None:
    log_path = workspace.scratch / "skaffold-dev.log"
    with log_path.open("w") as log:
        # Port-forwarding off: the checks go through the Ingress, and :8000 may be anyone's.
        process = subprocess.Popen(
            [str(SKAFFOLD), "dev", "--tag", TAG, "--port-forward=off"], cwd=workspace.root,
            env=workspace.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 480
        while "Watching for changes" not in log_path.read_text():
            assert process.poll() is None, f"skaffold dev exited:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"not deployed:\n{log_path.read_text()[-4000:]}"
            time.sleep(1)
        pods = [pod for pod in api_pods(namespaces) if ready(pod)]
        # The dev profile's pods: the dev image, its own (not `skaffold run`'s), reloading.
        assert pods and {api_image(pod) for pod in pods} != {deployed.image}
        (api,) = [c for c in pods[0].spec.containers if c.name == "api"]
        assert "--reload" in (api.args or []), api.args
        before = {pod.metadata.uid for pod in pods}
        wait_for_body("/whoami", {"host": HOST}, timeout=60)

        marker = f"edit-{time.monotonic_ns()}"
        source = workspace.root / EDITED_FILE
        text = source.read_text()
        assert text.count(EDIT_ANCHOR) == 1, f"{EDITED_FILE} changed: update EDIT_ANCHOR"
        edited = text.replace(
            EDIT_ANCHOR, f'{EDIT_ANCHOR}\n            "skaffold_edit": "{marker}",'
        )
        saved = time.monotonic()
        source.write_text(edited)
        served = wait_for_body("/whoami", {"skaffold_edit": marker}, timeout=120)
        print(f"skaffold dev: {served - saved:.1f} s from the save to the first response with it")

        # Synced into the running pods (uvicorn reloaded), not rebuilt and redeployed.
        assert {pod.metadata.uid for pod in api_pods(namespaces) if ready(pod)} == before
        assert "Syncing 1 files" in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        stop_dev(process, log_path)
    # Interrupted, `skaffold dev` deletes what it deployed.
    wait_until(lambda: not [pod for pod in api_pods(namespaces)
                            if pod.metadata.deletion_timestamp is None],
               timeout=120, interval=1, what="skaffold dev's pods to be deleted")  # fmt: skip


def stop_dev(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Ctrl+C for `skaffold dev` (its cleanup uninstalls the release), then kill if stuck."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise AssertionError(
            f"skaffold dev ignored Ctrl+C:\n{log_path.read_text()[-3000:]}"
        ) from None
