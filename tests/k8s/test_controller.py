"""Real traffic through the local cluster's ingress controller (Traefik), for a release
routed by an Ingress and one routed by an HTTPRoute on the cluster's Gateway, sent from a
pod (to Traefik's Service) and from the host (to its NodePort, with the Host header).

Pods send with ``python -m gatehouse.probe`` (kubectl exec in one resident pod per
release namespace); the host runs the same probe in this test process.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cluster.layout import POD_CIDR

from gatehouse.probe.options import parse_options
from gatehouse.probe.report import as_dict
from gatehouse.probe.run import probe as run_probe
from gatehouse.probe.transport import Unreachable
from tests.k8s.conftest import KUBECTL, Cluster, ProbeResult, run, suffix
from tests.k8s.controller_releases import (
    ROUTES,
    Controller,
    Routed,
    answered_since,
    answers_by_pod,
    host_address_seen_by_traefik,
    traefik_pod_ip,
)

pytestmark = pytest.mark.k8s

SPOOFED = "203.0.113.7"  # TEST-NET-3: what a client claims to be in X-Forwarded-For
PAST_THE_LIMIT = 4  # requests beyond the limit in one burst
# The resident pod's process: waits to be exec'd into, leaves on SIGTERM (the namespace's
# deletion) instead of making the kubelet wait out the grace period, and ends on its own.
SLEEPER = (
    "import signal, sys, time;"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0));"
    "time.sleep(3600)"
)


@dataclass
class ResidentPod:
    """A running pod of the API image, labelled as a client, to run probes in."""

    namespace: str
    name: str
    ip: str

    def probe(self, args: list[str]) -> ProbeResult:
        # The first connection from a new pod may wait for the NetworkPolicy agent.
        done = subprocess.run(
            [KUBECTL, "exec", "-n", self.namespace, self.name, "--",
             "python", "-m", "gatehouse.probe", "--wait-reachable", "15", *args],
            capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        return ProbeResult(done.returncode, done.stdout, done.stderr)


def probe_from_host(args: list[str]) -> ProbeResult:
    """The probe run in this process, on the host; as a pod's would, exit 0 when every
    expectation holds, and its report as JSON."""
    options = parse_options(args)
    try:
        report = run_probe(options)
    except Unreachable as error:
        return ProbeResult(3, "", f"probe: cannot reach {options.target.base}: {error}")
    ok = all(check["ok"] for check in report.expectations)
    return ProbeResult(0 if ok else 1, json.dumps(as_dict(report), indent=2), "")


@dataclass
class Caller:
    """Who sends, where Traefik is for them, and the client IP the API must report."""

    traefik_url: str
    address: str
    send: Callable[[list[str]], ProbeResult]

    def probe(self, routed: Routed, path: str, *args: str, origin: str = "") -> ProbeResult:
        return self.send(["--url", f"{self.traefik_url}{path}", "--host-header", routed.host,
                          "--origin", origin or routed.origin, *args])  # fmt: skip


@pytest.fixture(scope="module")
def residents(cluster: Cluster, controller: Controller) -> dict[str, ResidentPod]:
    """One resident pod per release namespace (the client label admits it to the API pods
    directly, as well as through Traefik)."""
    names = {}
    for route, routed in controller.routed.items():
        namespace, name = routed.release.namespace, f"resident-{suffix()}"
        cluster.created_pods.append((namespace, name))
        run([*cluster.pod_args(name, namespace, labelled=True),
             "--command", "--", "python", "-c", SLEEPER], timeout=60)  # fmt: skip
        names[route] = (namespace, name)
    pods = {}
    for route, (namespace, name) in names.items():
        cluster.wait_for_pod(namespace, name, ("Running",), 180)
        ip = cluster.core.read_namespaced_pod(name, namespace, _request_timeout=10).status.pod_ip
        pods[route] = ResidentPod(namespace, name, ip)
    return pods  # deleted with the cluster fixture's other pods


@pytest.fixture(params=ROUTES)
def routed(request: pytest.FixtureRequest, controller: Controller) -> Routed:
    return controller.routed[request.param]


@pytest.fixture(params=["pod", "host"])
def caller(
    request: pytest.FixtureRequest,
    controller: Controller,
    routed: Routed,
    residents: dict[str, ResidentPod],
) -> Caller:
    if request.param == "pod":
        pod = residents[routed.route]
        return Caller(controller.pod_url, pod.ip, pod.probe)
    # Not the node's 10.250.0.1: kube-proxy masquerades NodePort traffic, so Traefik sees
    # the host at the pods' bridge address (host_address_seen_by_traefik says how).
    return Caller(controller.host_url, host_address_seen_by_traefik(), probe_from_host)


# -- whom the API believes ---------------------------------------------------------------------


def test_client_ip_is_the_callers_address(caller: Caller, routed: Routed) -> None:
    result = caller.probe(routed, "/whoami", "--no-preflight",
                          "--expect-client-ip", caller.address, "--json")  # fmt: skip
    assert result.returncode == 0, result
    assert result.json()["client"]["client_ip"] == caller.address


def test_forwarded_headers_sent_to_traefik_are_not_believed(caller: Caller, routed: Routed) -> None:
    # Traefik trusts no forwarded headers from its clients: it drops these and sends on
    # the address it saw, which the API (trusting Traefik's pod) takes as the client IP.
    result = caller.probe(
        routed, "/whoami", "--no-preflight", "--header", f"X-Forwarded-For: {SPOOFED}",
        "--header", "X-Forwarded-Proto: https", "--expect-client-ip", caller.address, "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    client = result.json()["client"]
    assert (client["client_ip"], client["scheme"]) == (caller.address, "http"), client


# -- CORS, per namespace -----------------------------------------------------------------------


def test_own_origin_allowed_other_namespace_origin_refused(
    caller: Caller, routed: Routed, controller: Controller
) -> None:
    allowed = caller.probe(routed, "/whoami", "--expect", "allowed",
                           "--expect-security-headers", "--no-whoami")  # fmt: skip
    assert allowed.returncode == 0, allowed
    other = controller.other(routed)
    refused = caller.probe(routed, "/whoami", "--expect", "refused", "--no-whoami", "--json",
                           origin=other.origin)  # fmt: skip
    assert refused.returncode == 0, refused
    assert "no Access-Control-Allow-Origin" in refused.json()["preflight"]["reasons"]


# -- the limit ---------------------------------------------------------------------------------


def test_limit_is_exact_across_both_replicas_behind_traefik(
    cluster: Cluster, caller: Caller, routed: Routed
) -> None:
    release = routed.release
    limit = release.search_limit
    burst = limit + PAST_THE_LIMIT
    before = answers_by_pod(cluster, release)
    assert len(before) == 2, f"expected 2 running API pods, found {sorted(before)}"
    # The chart's default algorithm counts a trailing window: no edge to wait for; this
    # client (route and caller) sends no other /search.
    result = caller.probe(
        routed, "/search?q=controller", "--no-preflight", "--no-whoami",
        "--repeat", str(burst), "--concurrency", str(burst), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result
    assert result.json()["status_counts"] == {"200": limit, "429": PAST_THE_LIMIT}
    served = answered_since(before, answers_by_pod(cluster, release), "GET", "/search")
    # Every /search answer since `before` is the burst's: nothing else here calls /search.
    assert sum(s["200"] for s in served.values()) == limit, served
    assert sum(s["429"] for s in served.values()) == PAST_THE_LIMIT, served
    assert len(served) == 2 and all(served.values()), f"one pod served the whole burst: {served}"


# -- proxy trust pinned to Traefik's pod -------------------------------------------------------


def test_trust_pinned_to_traefiks_pod_believes_only_traefik(
    cluster: Cluster, controller: Controller, routed: Routed, residents: dict[str, ResidentPod]
) -> None:
    release = routed.release
    assert traefik_pod_ip(cluster) == controller.pod_ip, "Traefik's pod was replaced"
    pod = residents[routed.route]
    spoof = ("--header", f"X-Forwarded-For: {SPOOFED}", "--header", "X-Forwarded-Proto: https")

    through = pod.probe(["--url", f"{controller.pod_url}/whoami", "--host-header", routed.host,
                         "--origin", routed.origin, "--no-preflight", *spoof,
                         "--expect-client-ip", pod.ip, "--json"])  # fmt: skip
    assert through.returncode == 0, through

    # Straight to an API pod (the client label admits the probe pod): its headers are a
    # client's, not a proxy's.
    api_pod = cluster.api_pods(release)[0]
    (port,) = (p.container_port for p in api_pod.spec.containers[0].ports if p.name == "http")
    direct = pod.probe(["--url", f"http://{api_pod.status.pod_ip}:{port}/whoami",
                        "--host-header", release.service_host, "--origin", routed.origin,
                        "--no-preflight", *spoof, "--expect-client-ip", pod.ip, "--json"])  # fmt: skip
    assert direct.returncode == 0, direct
    client = direct.json()["client"]
    assert (client["client_ip"], client["scheme"]) == (pod.ip, "http"), client

    # What made the difference: only Traefik's own address is trusted, while the probe pod
    # is in the range a pod-CIDR trust (k8s/values-cluster.yaml's) would have believed.
    assert release.trusted_cidrs == [f"{controller.pod_ip}/32"], release.trusted_cidrs
    assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(POD_CIDR), pod.ip
