"""dev, staging and prod on the local cluster, installed as operators install them.

Each check runs where a real cluster decides: Pod Security admission, the kubelet's
ConfigMap volume, kube-proxy's Service balancing, the NetworkPolicy agent, the container
runtime's security settings. Probes are `kubectl run` pods of the project's own image.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.k8s.conftest import (
    ENVIRONMENTS,
    HELM,
    KUBECTL,
    Cluster,
    Environments,
    Release,
    exec_python,
    on_local_cluster,
    option,
    run,
)

pytestmark = pytest.mark.k8s


def api_pods(cluster: Cluster, release: Release) -> list[Any]:
    pods = cluster.api_pods(release)
    assert len(pods) >= 2, f"{release.namespace}: expected 2 running API pods, found {len(pods)}"
    return pods


def pod_url(pod: Any, path: str) -> str:
    return f"http://{pod.status.pod_ip}:8000{path}"


def wait_until(check: Any, timeout: float, what: str, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"no {what} after {timeout:.0f} s (last: {last!r})")


# -- CORS per environment ----------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_allows_its_origins_and_refuses_the_others(
    environments: Environments, probe, env: str
) -> None:
    release = environments.releases[env]
    url = f"{release.base_url}/search?q=env"
    for origin in release.values["config"]["allowedOrigins"]:
        allowed = probe(release.namespace, "--url", url, "--origin", origin,
                        "--expect", "allowed", "--expect-security-headers")  # fmt: skip
        assert allowed.returncode == 0, allowed
    for other in ENVIRONMENTS:
        if other == env:
            continue
        foreign = environments.releases[other].origin
        refused = probe(release.namespace, "--url", url, "--origin", foreign,
                        "--expect", "refused", "--json")  # fmt: skip
        assert refused.returncode == 0, refused
        assert "no Access-Control-Allow-Origin" in refused.json()["preflight"]["reasons"]


# -- Pod Security admission --------------------------------------------------------------------


def test_pod_security_refuses_a_pod_that_breaks_restricted(
    cluster: Cluster, environments: Environments
) -> None:
    namespace = environments.releases["prod"].namespace
    name = "breaks-restricted"
    cluster.created_pods.append((namespace, name))
    # The image runs as root here: no securityContext at all, as a careless manifest has it.
    done = run([KUBECTL, "run", name, "-n", namespace, f"--image={cluster.image}",
                "--image-pull-policy=IfNotPresent", "--restart=Never", "--command", "--",
                "sleep", "1"], timeout=60, check=False)  # fmt: skip
    assert done.returncode != 0, f"a non-restricted pod was admitted:\n{done.stdout}"
    assert 'violates PodSecurity "restricted:latest"' in done.stderr, done.stderr
    for needed in ("allowPrivilegeEscalation", "capabilities", "runAsNonRoot", "seccompProfile"):
        assert needed in done.stderr, done.stderr


def test_every_pod_the_chart_makes_is_admitted(
    cluster: Cluster, environments: Environments
) -> None:
    for env, release in environments.releases.items():
        assert "would violate PodSecurity" not in environments.install_stderr[env], (
            environments.install_stderr[env]
        )
        pods = cluster.core.list_namespaced_pod(
            release.namespace, label_selector=f"app.kubernetes.io/instance={release.name}",
            _request_timeout=10,
        ).items  # fmt: skip
        components = sorted(p.metadata.labels.get("app.kubernetes.io/component", "") for p in pods)
        assert components.count("api") >= 2 and "redis" in components, (env, components)
        for pod in pods:
            assert pod.status.phase == "Running", (env, pod.metadata.name, pod.status.phase)
        # helm test makes the chart's test pods: admitted, and passing, in every environment.
        done = run([HELM, "test", release.name, "--namespace", release.namespace,
                    "--timeout", "5m"], timeout=420, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


# -- the allowlist follows the ConfigMap without a restart -------------------------------------


def pod_identity(cluster: Cluster, release: Release) -> dict[str, int]:
    return {
        pod.metadata.uid: sum(s.restart_count for s in pod.status.container_statuses or [])
        for pod in api_pods(cluster, release)
    }


@pytest.fixture
def restored_configmap(cluster: Cluster, environments: Environments) -> Iterator[Release]:
    release = environments.releases["dev"]
    configmap = cluster.core.read_namespaced_config_map(release.fullname, release.namespace)
    original = configmap.data["APP_ALLOWED_ORIGINS"]
    yield release
    patch = {"data": {"APP_ALLOWED_ORIGINS": original}}
    run([KUBECTL, "patch", "configmap", release.fullname, "-n", release.namespace,
         "--type", "merge", "-p", json.dumps(patch)], timeout=60)  # fmt: skip


def test_configmap_patch_changes_the_allowlist_without_a_restart(
    cluster: Cluster, restored_configmap: Release, probe
) -> None:
    release = restored_configmap
    added = "https://patched.dev.gatehouse.example"
    before = pod_identity(cluster, release)
    pods = api_pods(cluster, release)
    host = ("--host-header", release.service_host)

    def verdicts() -> list[int]:
        # Each pod on its own address: both must have taken the change.
        return [
            probe(release.namespace, "--url", pod_url(pod, "/search?q=cm"), *host,
                  "--origin", added, "--no-whoami", "--expect", "allowed").returncode
            for pod in pods
        ]  # fmt: skip

    assert verdicts() == [1, 1], "the new origin was allowed before the change"
    current = cluster.core.read_namespaced_config_map(release.fullname, release.namespace)
    origins = f"{current.data['APP_ALLOWED_ORIGINS']},{added}"
    run([KUBECTL, "patch", "configmap", release.fullname, "-n", release.namespace,
         "--type", "merge", "-p", json.dumps({"data": {"APP_ALLOWED_ORIGINS": origins}})])  # fmt: skip
    started = time.monotonic()
    # The kubelet's sync period here is 10 s (cluster/configs.py); its ConfigMap cache and
    # the service's file watch add a few seconds more.
    wait_until(lambda: verdicts() == [0, 0], 90, "allowed verdict from both pods", every=3)
    took = time.monotonic() - started
    assert pod_identity(cluster, release) == before, "a pod restarted or was replaced"
    print(f"ConfigMap patch reached both pods in {took:.0f} s, no restart")


# -- the shared limit --------------------------------------------------------------------------


def search_requests_by_pod(cluster: Cluster, release: Release) -> dict[str, dict[str, float]]:
    """Per API pod, its own count of GET /search answers by status (from its /metrics)."""
    port = release.values["metrics"]["port"]  # /metrics is served only on the metrics port
    code = (
        "import urllib.request;"
        f"print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
    )
    counts: dict[str, dict[str, float]] = {}
    pattern = re.compile(r"^gatehouse_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    for pod in api_pods(cluster, release):
        text = exec_python(cluster, release.namespace, pod.metadata.name, code)
        mine: dict[str, float] = {}
        for labels, value in pattern.findall(text):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if fields.get("route") == "/search" and fields.get("method") == "GET":
                mine[fields["status"]] = mine.get(fields["status"], 0) + float(value)
        counts[pod.metadata.name] = mine
    return counts


def test_limit_is_exact_across_two_replicas_and_both_served(
    cluster: Cluster, environments: Environments, probe
) -> None:
    release = environments.releases["staging"]
    limit, extra = release.search_limit, 6
    before = search_requests_by_pod(cluster, release)
    # A fresh client (the probe's own pod) in a trailing window: no edge to wait for.
    result = probe(
        release.namespace, "--url", f"{release.base_url}/search?q=both", "--origin", release.origin,
        "--no-preflight", "--no-whoami", "--repeat", str(limit + extra),
        "--concurrency", str(limit + extra), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.json()["status_counts"] == {"200": limit, "429": extra}
    after = search_requests_by_pod(cluster, release)
    served = {
        pod: {s: after[pod].get(s, 0) - before.get(pod, {}).get(s, 0) for s in ("200", "429")}
        for pod in after
    }
    # The probe's own /whoami and preflight are off: every new /search answer is the burst's.
    assert sum(d["200"] for d in served.values()) == limit, served
    assert sum(d["429"] for d in served.values()) == extra, served
    assert len(served) == 2 and all(sum(d.values()) > 0 for d in served.values()), (
        f"one pod served the whole burst: {served}"
    )


# -- Redis goes away ---------------------------------------------------------------------------


def redis_pods(cluster: Cluster, release: Release) -> list[Any]:
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=redis"
    return cluster.core.list_namespaced_pod(
        release.namespace, label_selector=selector, _request_timeout=10
    ).items


def redis_ready(cluster: Cluster, release: Release) -> bool:
    return any(
        pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        for pod in redis_pods(cluster, release)
    )


def test_open_mode_answers_only_200_or_429_while_redis_is_deleted(
    cluster: Cluster, environments: Environments, probe
) -> None:
    release = environments.releases["dev"]
    assert release.values["config"]["rateLimit"]["failureMode"] == "open"
    loop = cluster.start_probe(
        release.namespace, "--url", f"{release.base_url}/search?q=outage", "--origin",
        release.origin, "--no-preflight", "--no-whoami", "--duration", "40", "--interval", "0.1",
        "--concurrency", "2", "--timeout", "5", "--json",
    )  # fmt: skip
    time.sleep(5)
    (old,) = redis_pods(cluster, release)
    run([KUBECTL, "delete", "pod", old.metadata.name, "-n", release.namespace, "--wait=true"])
    wait_until(lambda: redis_ready(cluster, release), 90, "Redis pod Ready again")
    report = cluster.finish(release.namespace, loop, timeout=180).json()
    assert report["errors"] == {}, report["errors"]
    assert set(report["status_counts"]) <= {"200", "429"}, report["status_counts"]
    assert report["status_counts"].get("200", 0) > 0, report["status_counts"]
    # The shared count is back: a fresh client gets exactly the limit across both replicas.
    limit = release.search_limit  # each burst from a new probe pod: a fresh client

    def exact() -> bool:
        burst = probe(
            release.namespace, "--url", f"{release.base_url}/search?q=back", "--origin",
            release.origin, "--no-preflight", "--no-whoami", "--repeat", str(limit + 3),
            "--concurrency", str(limit + 3), "--json",
        )  # fmt: skip
        return burst.returncode == 0 and burst.json()["status_counts"] == {
            "200": limit, "429": 3,
        }  # fmt: skip

    # The API pods reconnect on their next check; a burst during that first moment fails open.
    wait_until(exact, 60, "exact limit with Redis back", every=1)


@pytest.fixture
def redis_scaled_down(cluster: Cluster, environments: Environments) -> Iterator[Release]:
    release = environments.releases["prod"]
    deployment = f"{release.fullname}-redis"
    run([KUBECTL, "scale", "deployment", deployment, "-n", release.namespace, "--replicas=0"])
    wait_until(lambda: not redis_pods(cluster, release), 60, "Redis pod gone")
    yield release
    run([KUBECTL, "scale", "deployment", deployment, "-n", release.namespace, "--replicas=1"])
    run([KUBECTL, "rollout", "status", f"deployment/{deployment}", "-n", release.namespace,
         "--timeout=120s"], timeout=150)  # fmt: skip
    run([KUBECTL, "rollout", "status", f"deployment/{release.fullname}", "-n", release.namespace,
         "--timeout=120s"], timeout=150)  # fmt: skip


def ready_endpoints(release: Release) -> set[str]:
    """Addresses the Service sends traffic to: its EndpointSlices' ready endpoints."""
    slices = json.loads(run([KUBECTL, "get", "endpointslices", "-n", release.namespace, "-l",
                             f"kubernetes.io/service-name={release.fullname}", "-o", "json"]).stdout)  # fmt: skip
    return {
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


def test_closed_mode_stays_in_the_service_and_answers_503_with_retry_after_and_cors(
    cluster: Cluster, redis_scaled_down: Release, probe, request: pytest.FixtureRequest
) -> None:
    release = redis_scaled_down
    assert release.values["config"]["rateLimit"]["failureMode"] == "closed"
    pods = api_pods(cluster, release)
    # Longer than the readiness probe needs to fail (period x threshold): a pod that went
    # unready without Redis would have left the Service by now, and a browser would get
    # the controller's bare 503, without CORS.
    readiness = {
        "periodSeconds": 5,
        "failureThreshold": 2,
        **release.values.get("probes", {}).get("readiness", {}),
    }
    time.sleep(readiness["periodSeconds"] * readiness["failureThreshold"] + 3)
    assert ready_endpoints(release) == {pod.status.pod_ip for pod in pods}
    # The API's own 503, through the Service and through the controller (prod's HTTPRoute
    # on the cluster's Gateway), from each pod: the limit is per pod while Redis is gone.
    ways_in = [(release.base_url, release.service_host)]
    ingress_url = option(request.config, "ingress_url")
    hostnames = release.values.get("httpRoute", {}).get("hostnames", [])
    if ingress_url and hostnames:
        ways_in.append((ingress_url, hostnames[0]))
    for base_url, host in ways_in:
        result = probe(
            release.namespace, "--url", f"{base_url}/search?q=closed", "--host-header", host,
            "--origin", release.origin, "--no-preflight", "--no-whoami",
            "--expect-status", "503", "--expect", "allowed", "--expect-security-headers", "--json",
        )  # fmt: skip
        assert result.returncode == 0, (base_url, result)
        report = result.json()
        assert int(report["rate_limit"]["retry-after"]) > 0, report["rate_limit"]
        cors = report["request"]["headers"]
        assert cors["access-control-allow-origin"] == release.origin, cors
    if on_local_cluster():
        assert len(ways_in) == 2, "the local cluster routes prod through Traefik's Gateway"


# -- who may reach Redis -----------------------------------------------------------------------


def test_redis_is_reachable_only_from_the_release_api_pods(
    cluster: Cluster, environments: Environments, outsider: str, probe
) -> None:
    release = environments.releases["dev"]
    redis = f"{release.fullname}-redis.{release.namespace}.svc.cluster.local"
    url = f"http://{redis}:6379/"
    # A labelled client (admitted to the API) in the release's namespace, and a pod elsewhere.
    for namespace, labelled in ((release.namespace, True), (outsider, False)):
        blocked = probe(namespace, "--url", url, "--origin", release.origin, "--timeout", "5",
                        "--no-preflight", "--no-whoami", labelled=labelled,
                        wait_reachable=False)  # fmt: skip
        assert blocked.returncode == 3, blocked
        assert "cannot reach" in blocked.stderr, blocked
    # The control: an API pod of the release connects (and Redis answers a PING with AUTH needed).
    pod = api_pods(cluster, release)[0]
    reply = exec_python(cluster, release.namespace, pod.metadata.name, (
        "import socket;"
        f"s = socket.create_connection(({redis!r}, 6379), timeout=5);"
        "s.sendall(b'PING\\r\\n'); print(s.recv(100).decode().strip())"
    ))  # fmt: skip
    assert reply.startswith("-NOAUTH"), reply


# -- the image's restricted settings, seen from inside -----------------------------------------

INSIDE = """
import errno, json, os
status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)
try:
    open('/gatehouse-write-test', 'w')
    root_write = 'written'
except OSError as error:
    root_write = errno.errorcode[error.errno]
print(json.dumps({
    'uid': os.getuid(), 'gid': os.getgid(), 'cap_eff': status['CapEff'].strip(),
    'cap_bnd': status['CapBnd'].strip(), 'no_new_privs': status['NoNewPrivs'].strip(),
    'seccomp': status['Seccomp'].strip(), 'root_write': root_write,
}))
"""


@pytest.mark.parametrize("component", ["api", "redis"])
def test_restricted_security_settings_hold_inside_the_container(
    cluster: Cluster, environments: Environments, component: str
) -> None:
    release = environments.releases["prod"]
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component={component}"
    pods = cluster.core.list_namespaced_pod(
        release.namespace, label_selector=selector, _request_timeout=10
    ).items
    pod = next(p for p in pods if p.status.phase == "Running")
    if component == "api":
        seen = json.loads(exec_python(cluster, release.namespace, pod.metadata.name, INSIDE))
        uid = release.values["runAsUser"]
    else:
        # The Redis image has no Python: read the same facts with the shell's own tools.
        done = run([KUBECTL, "exec", "-n", release.namespace, pod.metadata.name, "--", "sh", "-c",
                    "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status;"
                    " touch /gatehouse-write-test 2>&1 || true"], timeout=60)  # fmt: skip
        lines = done.stdout.splitlines()
        fields = dict(line.split(":\t", 1) for line in lines[2:6])
        seen = {
            "uid": int(lines[0]), "gid": int(lines[1]), "cap_eff": fields["CapEff"].strip(),
            "cap_bnd": fields["CapBnd"].strip(), "no_new_privs": fields["NoNewPrivs"].strip(),
            "seccomp": fields["Seccomp"].strip(),
            "root_write": "EROFS" if "Read-only file system" in done.stdout else done.stdout,
        }  # fmt: skip
        uid = release.values["redis"]["runAsUser"]
    assert seen["uid"] == uid != 0, seen
    assert seen["cap_eff"] == "0000000000000000", seen  # no capabilities at all
    assert seen["cap_bnd"] == "0000000000000000", seen  # and none to regain
    assert seen["no_new_privs"] == "1", seen  # allowPrivilegeEscalation: false
    assert seen["seccomp"] == "2", seen  # a seccomp filter (RuntimeDefault) is on
    assert seen["root_write"] == "EROFS", seen  # read-only root filesystem
