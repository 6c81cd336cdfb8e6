"""The cluster suite: the chart installed in a real cluster, checked from pods inside it.

Runs against the current kube context (``make k8s-test``). Without a reachable cluster
every test here is skipped with one reason. Everything the suite creates (namespaces,
pods) is deleted afterwards, also when a test fails.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

HELM = str(ROOT / "scripts" / "helm")
KUBECTL = str(ROOT / "scripts" / "kubectl")
CHART = str(ROOT / "charts" / "gatehouse")
CHART_VALUES = yaml.safe_load((ROOT / "charts/gatehouse/values.yaml").read_text())
CLIENT_LABEL = CHART_VALUES["networkPolicy"]["clientLabel"]
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}
# TEST-NET-1: no pod lives there, so with no ingress nothing in the cluster is a trusted proxy.
NOBODY_CIDR = "192.0.2.0/24"
SUITE_LABEL = {"gatehouse.io/k8s-test": "true"}
# The local cluster (python -m cluster up): scripts/with-cluster points KUBECONFIG here.
LOCAL_KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
LOCAL_VALUES = ROOT / "k8s" / "values-cluster.yaml"
# The ingress controller of the local cluster (cluster/addons.py: Traefik, its Service
# `traefik` in the namespace `traefik`, IngressClass `traefik`), the defaults there of
# --ingress-url, --ingress-class and --ingress-namespace.
LOCAL_INGRESS = {
    "ingress_url": "http://traefik.traefik.svc",
    "ingress_class": "traefik",
    "ingress_namespace": "traefik",
}
# Elsewhere: no ingress URL unless given (the ingress test skips), ingress-nginx's names.
OTHER_INGRESS = {
    "ingress_url": None,
    "ingress_class": "nginx",
    "ingress_namespace": "ingress-nginx",
}


def on_local_cluster() -> bool:
    given = os.environ.get("KUBECONFIG", "")
    return bool(given) and Path(given).resolve() == LOCAL_KUBECONFIG.resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gatehouse k8s", "the cluster suite (tests/k8s)")
    group.addoption("--release-a", metavar="NS/NAME", help="use this release, not a throwaway one")
    group.addoption("--release-b", metavar="NS/NAME", help="the second release (other origins)")
    group.addoption("--image", default="gatehouse-api:dev", help="API image (gatehouse-api:dev)")
    group.addoption("--ingress-url", metavar="URL",
                    help="the ingress controller as pods reach it, e.g. "
                    "http://ingress-nginx-controller.ingress-nginx.svc (local cluster: "
                    f"{LOCAL_INGRESS['ingress_url']}; elsewhere none: the ingress test skips)")  # fmt: skip
    group.addoption("--ingress-host", default="gatehouse-k8s.localtest.me",
                    help="Host the throwaway release's Ingress answers (sent to --ingress-url)")  # fmt: skip
    group.addoption("--ingress-class",
                    help=f"IngressClass (local cluster: {LOCAL_INGRESS['ingress_class']}; "
                    f"elsewhere {OTHER_INGRESS['ingress_class']})")  # fmt: skip
    group.addoption("--ingress-namespace",
                    help="namespace of the ingress controller pods (local cluster: "
                    f"{LOCAL_INGRESS['ingress_namespace']}; "
                    f"elsewhere {OTHER_INGRESS['ingress_namespace']})")  # fmt: skip
    group.addoption("--trusted-cidr", action="append", default=[],
                    help="proxy CIDR for throwaway releases (default: the ingress controller "
                    "pods' IPs, else 192.0.2.0/24)")  # fmt: skip
    group.addoption("--no-netpol", action="store_true",
                    help="the cluster does not enforce NetworkPolicy: skip that test")  # fmt: skip
    group.addoption("--chart-values", action="append", default=[], metavar="FILE",
                    help="values file under the suite's own for its releases, repeatable "
                    "(the local cluster: k8s/values-cluster.yaml)")  # fmt: skip
    group.addoption("--rollout-seconds", type=int, default=180,
                    help="how long the probe loop runs while the chart is upgraded (180)")  # fmt: skip


def option(config: pytest.Config, name: str) -> Any:
    # Registered late when only `pytest tests` is run: then the defaults apply.
    value = config.getoption(name, default=None)
    if value is None and name in LOCAL_INGRESS:
        # The ingress options' defaults depend on the cluster: the local one has Traefik.
        return (LOCAL_INGRESS if on_local_cluster() else OTHER_INGRESS)[name]
    return value


@functools.cache
def cluster_problem() -> str | None:
    """Why no cluster can be used, or None when the API server answers."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        return "the kubernetes Python client is not installed"
    try:
        config.load_kube_config()
    except (ConfigException, OSError) as error:
        return f"no kube context ({str(error).splitlines()[0]})"
    configuration = client.Configuration.get_default_copy()
    configuration.retries = 0  # one try: an address that drops packets answers in 3 s, not 12
    try:
        client.VersionApi(client.ApiClient(configuration)).get_code(_request_timeout=3)
    except Exception as error:
        return (
            f"the API server of the current kube context does not answer ({type(error).__name__})"
        )
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    mine = [item for item in items if here in item.path.parents]
    if not mine:
        return
    problem = cluster_problem()
    for item in mine:
        item.add_marker(pytest.mark.k8s)
        if problem:
            item.add_marker(pytest.mark.skip(reason=f"no Kubernetes cluster: {problem}"))


# -- tools -------------------------------------------------------------------------------------


def run(
    args: list[str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def suffix() -> str:
    return secrets.token_hex(3)


def split_image(image: str) -> tuple[str, str]:
    repository, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repository, tag


def first_rate(rate: str) -> int:
    match = re.match(r"\s*(\d+)\s*/", rate)
    assert match, f"cannot read a count from rate limit {rate!r}"
    return int(match.group(1))


@dataclass
class Release:
    namespace: str
    name: str
    values: dict[str, Any]
    throwaway: bool
    # Values files helm applies under ``values`` (the cluster's own needs, e.g. its images).
    base_values: tuple[Path, ...] = ()

    @property
    def fullname(self) -> str:
        if self.values.get("fullnameOverride"):
            return str(self.values["fullnameOverride"])[:63].rstrip("-")
        chart = self.values.get("nameOverride") or "gatehouse"
        full = self.name if chart in self.name else f"{self.name}-{chart}"
        return full[:63].rstrip("-")

    @property
    def service_host(self) -> str:
        domain = self.values.get("config", {}).get("clusterDomain", "cluster.local")
        return f"{self.fullname}.{self.namespace}.svc.{domain}"

    @property
    def base_url(self) -> str:
        return f"http://{self.service_host}:{self.values.get('service', {}).get('port', 80)}"

    @property
    def origin(self) -> str:
        return str(self.values["config"]["allowedOrigins"][0])

    @property
    def search_limit(self) -> int:
        return first_rate(self.values["config"]["rateLimit"]["search"])

    @property
    def trusted_cidrs(self) -> list[str]:
        return list(self.values["proxy"]["trustedCIDRs"])


@dataclass
class ProbeResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        # kubectl may print its own notes around the container's output: take the JSON object.
        start, end = self.stdout.find("{"), self.stdout.rfind("}")
        assert start >= 0, f"no JSON in the probe output:\n{self.stdout}\n{self.stderr}"
        return json.loads(self.stdout[start : end + 1])

    def __str__(self) -> str:
        return f"exit {self.returncode}\n{self.stdout}\n{self.stderr}"


@dataclass
class Cluster:
    image: str
    created_namespaces: list[str] = field(default_factory=list)
    created_pods: list[tuple[str, str]] = field(default_factory=list)

    @functools.cached_property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api()

    @functools.cached_property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api()

    def create_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{suffix()}"
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**RESTRICTED, **SUITE_LABEL}},
        }
        self.created_namespaces.append(name)
        done = subprocess.run(
            [KUBECTL, "apply", "-f", "-"], input=json.dumps(manifest), text=True,
            capture_output=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"kubectl apply namespace {name}: {done.stderr}"
        return name

    def overrides(self, container: str) -> str:
        # A strategic merge patch on kubectl run's pod: the container keeps its image and
        # command and gains what Pod Security "restricted" requires.
        uid = CHART_VALUES["runAsUser"]
        return json.dumps({
            "apiVersion": "v1",
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [{
                    "name": container,
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                    },
                }],
            },
        })  # fmt: skip

    def pod_args(self, name: str, namespace: str, labelled: bool) -> list[str]:
        labels = {**SUITE_LABEL}
        if labelled:
            labels[CLIENT_LABEL["key"]] = CLIENT_LABEL["value"]
        return [
            KUBECTL, "run", name, "--namespace", namespace, f"--image={self.image}",
            "--image-pull-policy=IfNotPresent", "--restart=Never",
            "--labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
            "--override-type=strategic", f"--overrides={self.overrides(name)}",
        ]  # fmt: skip

    def probe(
        self,
        namespace: str,
        *args: str,
        labelled: bool = True,
        wait_reachable: bool = True,
        timeout: float = 300,
    ) -> ProbeResult:
        """Run the probe in a new pod, attached; the pod is removed when it exits.

        ``wait_reachable``: retry the first connection for a while, as a NetworkPolicy
        agent may admit the new pod's address just after it starts; off where the test is
        that the connection is refused.
        """
        if wait_reachable:
            args = ("--wait-reachable", "15", *args)
        name = f"probe-{suffix()}"
        self.created_pods.append((namespace, name))
        command = [
            *self.pod_args(name, namespace, labelled),
            "--rm", "--attach", "--quiet", "--pod-running-timeout=3m",
            "--command", "--", "python", "-m", "gatehouse.probe", *args,
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return ProbeResult(done.returncode, done.stdout, done.stderr)

    def start_probe(self, namespace: str, *args: str) -> str:
        """Start the probe in a detached pod; returns its name (read it with ``finish``)."""
        name = f"probe-{suffix()}"
        self.created_pods.append((namespace, name))
        run([*self.pod_args(name, namespace, True), "--command", "--",
             "python", "-m", "gatehouse.probe", "--wait-reachable", "15", *args], timeout=60)  # fmt: skip
        self.wait_for_pod(namespace, name, ("Running", "Succeeded", "Failed"), 180)
        return name

    def wait_for_pod(
        self, namespace: str, name: str, phases: tuple[str, ...], timeout: float
    ) -> str:
        deadline = time.monotonic() + timeout
        phase = "unknown"
        while time.monotonic() < deadline:
            pod = self.core.read_namespaced_pod(name, namespace, _request_timeout=10)
            phase = pod.status.phase
            if phase in phases:
                return str(phase)
            time.sleep(1)
        raise AssertionError(f"pod {namespace}/{name} still {phase} after {timeout} s")

    def finish(self, namespace: str, name: str, timeout: float) -> ProbeResult:
        phase = self.wait_for_pod(namespace, name, ("Succeeded", "Failed"), timeout)
        pod = self.core.read_namespaced_pod(name, namespace, _request_timeout=10)
        state = pod.status.container_statuses[0].state.terminated
        logs = self.core.read_namespaced_pod_log(name, namespace, _request_timeout=30)
        return ProbeResult(
            state.exit_code if state else (0 if phase == "Succeeded" else 1), logs, ""
        )

    def api_pods(self, release: Release) -> list[Any]:
        selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=api"
        pods = self.core.list_namespaced_pod(
            release.namespace, label_selector=selector, _request_timeout=10
        ).items
        return [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]

    def cleanup(self) -> None:
        for namespace, name in self.created_pods:
            run([KUBECTL, "delete", "pod", name, "-n", namespace, "--ignore-not-found",
                 "--wait=false"], check=False, timeout=60)  # fmt: skip
        for namespace in self.created_namespaces:
            run([KUBECTL, "delete", "namespace", namespace, "--ignore-not-found",
                 "--wait=false"], check=False, timeout=60)  # fmt: skip


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    problem = cluster_problem()
    if problem:
        pytest.skip(f"no Kubernetes cluster: {problem}")
    found = Cluster(image=option(request.config, "image") or "gatehouse-api:dev")
    request.addfinalizer(found.cleanup)
    yield found


def ingress_trusted_cidrs(cluster: Cluster, config: pytest.Config) -> list[str]:
    given = option(config, "trusted_cidr") or []
    if given:
        return list(given)
    if not option(config, "ingress_url"):
        return [NOBODY_CIDR]
    namespace = option(config, "ingress_namespace") or "ingress-nginx"
    pods = cluster.core.list_namespaced_pod(namespace, _request_timeout=10).items
    ips = [p.status.pod_ip for p in pods if p.status.pod_ip]
    assert ips, f"--ingress-url given but no pod with an IP in namespace {namespace}"
    return [str(ipaddress.ip_network(ip)) for ip in ips]


def release_values(
    config: pytest.Config, origins: list[str], trusted: list[str], ingress: bool
) -> dict[str, Any]:
    repository, tag = split_image(option(config, "image") or "gatehouse-api:dev")
    namespace = option(config, "ingress_namespace") or "ingress-nginx"
    values: dict[str, Any] = {
        "replicaCount": 2,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "config": {
            "environment": "dev",
            "allowedOrigins": origins,
            "trustedHosts": [option(config, "ingress_host") or "gatehouse-k8s.localtest.me"],
            "rateLimit": {"default": "100/minute", "search": "5/minute", "failureMode": "open"},
        },
        "proxy": {"trustedCIDRs": trusted},
        "networkPolicy": {
            # Any pod of the controller's namespace: the chart's presets name pod labels too.
            "ingressController": {
                "preset": "custom",
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "podSelector": {},
            }
        },
    }
    if ingress:
        values["ingress"] = {
            "enabled": True,
            "className": option(config, "ingress_class") or "nginx",
            "hosts": [{"host": values["config"]["trustedHosts"][0],
                       "paths": [{"path": "/", "pathType": "Prefix"}]}],
        }  # fmt: skip
    return values


def helm_install(release: Release, tmp: Path) -> None:
    values_file = tmp / f"values-{release.namespace}.yaml"
    values_file.write_text(yaml.safe_dump(release.values))
    under = [arg for path in release.base_values for arg in ("--values", str(path))]
    run([HELM, "upgrade", "--install", release.name, CHART, "--namespace", release.namespace,
         *under, "--values", str(values_file), "--wait", "--timeout", "5m"], timeout=420)  # fmt: skip


def existing_release(spec: str) -> Release:
    namespace, sep, name = spec.partition("/")
    if not sep or not namespace or not name:
        raise pytest.UsageError(f"expected NAMESPACE/RELEASE, got {spec!r}")
    done = run([HELM, "get", "values", name, "--namespace", namespace, "--all", "-o", "json"])
    return Release(namespace, name, json.loads(done.stdout), throwaway=False)


@pytest.fixture(scope="session")
def releases(
    cluster: Cluster, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Release, Release]:
    """Two releases with different origins: given on the command line, or installed here."""
    config = request.config
    given = option(config, "release_a"), option(config, "release_b")
    if any(given):
        if not all(given):
            raise pytest.UsageError("give both --release-a and --release-b, or neither")
        return existing_release(given[0]), existing_release(given[1])
    tmp = tmp_path_factory.mktemp("releases")
    trusted = ingress_trusted_cidrs(cluster, config)
    ingress = bool(option(config, "ingress_url"))
    made = []
    for letter in ("a", "b"):
        namespace = cluster.create_namespace(f"gh-k8s-{letter}")
        origins = [f"https://app-{letter}.k8s-test.example"]
        given = option(config, "chart_values") or ([LOCAL_VALUES] if on_local_cluster() else [])
        base = tuple(ROOT / path for path in given)
        made.append(
            Release(
                namespace,
                "gatehouse",
                release_values(config, origins, trusted, ingress),
                True,
                base,
            )
        )
    for release in made:
        helm_install(release, tmp)
    return made[0], made[1]


@pytest.fixture(scope="session")
def outsider(cluster: Cluster) -> str:
    """A namespace of the suite's own, with no NetworkPolicy and no release."""
    return cluster.create_namespace("gh-k8s-out")


@pytest.fixture
def probe(cluster: Cluster) -> Callable[..., ProbeResult]:
    return cluster.probe


# -- the three environments, as operators install them ----------------------------------------

ENVIRONMENTS = ("dev", "staging", "prod")
ENV_NAMESPACES = (*(f"gatehouse-{env}" for env in ENVIRONMENTS), "gatehouse-verify")


@dataclass
class Environments:
    releases: dict[str, Release]
    # What `helm install` printed on stderr, by environment (Pod Security warnings land there).
    install_stderr: dict[str, str]


def namespace_exists(cluster: Cluster, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.core.read_namespace(name, _request_timeout=10)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def namespace_terminating(cluster: Cluster, name: str) -> bool:
    namespace = cluster.core.read_namespace(name, _request_timeout=10)
    return bool(namespace.metadata.deletion_timestamp)


@pytest.fixture(scope="session")
def environments(cluster: Cluster) -> Environments:
    """dev, staging and prod installed as the README says: k8s/namespaces.yaml, then
    `helm install` with k8s/values-<env>.yaml and the local cluster's k8s/values-cluster.yaml.

    Only on the local cluster (its images, its pod CIDR): on another cluster these
    namespaces may be real environments, which the suite never touches.
    """
    if not on_local_cluster():
        pytest.skip("per-environment installs use k8s/values-cluster.yaml: local cluster only")
    # A namespace still being deleted (an earlier run's) refuses new objects: let it go first.
    deadline = time.monotonic() + 180
    while any(namespace_exists(cluster, name) and namespace_terminating(cluster, name)
              for name in ENV_NAMESPACES):  # fmt: skip
        assert time.monotonic() < deadline, "an earlier run's namespaces are still terminating"
        time.sleep(2)
    # Deleted at the end (their releases with them), also after a failure.
    cluster.created_namespaces.extend(ENV_NAMESPACES)
    run([KUBECTL, "apply", "-f", str(ROOT / "k8s" / "namespaces.yaml")], timeout=60)
    releases, stderr = {}, {}
    for env in ENVIRONMENTS:
        namespace = f"gatehouse-{env}"
        done = run([HELM, "upgrade", "--install", "gatehouse", CHART, "--namespace", namespace,
                    "--values", str(ROOT / "k8s" / f"values-{env}.yaml"),
                    "--values", str(LOCAL_VALUES), "--wait", "--timeout", "5m"], timeout=420)  # fmt: skip
        stderr[env] = done.stderr
        releases[env] = existing_release(f"{namespace}/gatehouse")
    return Environments(releases, stderr)


def exec_python(cluster: Cluster, namespace: str, pod: str, code: str) -> str:
    """Run ``python -c code`` inside a running pod's container (kubectl exec) and return stdout."""
    done = run([KUBECTL, "exec", "-n", namespace, pod, "--", "python", "-c", code], timeout=120)
    return done.stdout


# -- traffic through the local cluster's ingress controller (controller_releases.py) ----------


@pytest.fixture(scope="session")
def controller_page_port() -> Iterator[int]:
    """The browser tests' page on 127.0.0.1; its port is part of the controller releases'
    origins, so both test_controller files share one pair of releases."""
    from tests.k8s.controller_releases import serve_pages

    yield from serve_pages()


@pytest.fixture(scope="session")
def controller(
    cluster: Cluster,
    controller_page_port: int,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    """An Ingress-routed and an HTTPRoute-routed release behind Traefik (local cluster only)."""
    from tests.k8s.controller_releases import install_behind_controller

    return install_behind_controller(
        cluster, request.config, controller_page_port, tmp_path_factory.mktemp("controller")
    )
