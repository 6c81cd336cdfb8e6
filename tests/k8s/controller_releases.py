"""Traffic through the local cluster's ingress controller (Traefik, cluster/addons.py).

Two throwaway releases, installed once per session (conftest.py's ``controller`` fixture)
and shared by test_controller.py and test_controller_browser.py: one routed by an Ingress
(IngressClass `traefik`), one by an HTTPRoute on the cluster's Gateway `traefik/gatehouse`.
Each answers its own Host under ctl.localtest.me and allows one origin, the browser test's
page for that route, so each release's origin is foreign to the other. Both trust only
Traefik's pod address as a proxy (a /32), not the pod network.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cluster.addons import (
    GATEWAY_LISTENER,
    GATEWAY_NAME,
    TRAEFIK_LABELS,
    TRAEFIK_NAMESPACE,
    TRAEFIK_NODE_PORT,
    traefik_host_url,
)
from cluster.layout import BRIDGE
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT
from tests.k8s.conftest import (
    LOCAL_VALUES,
    Cluster,
    Release,
    exec_python,
    helm_install,
    on_local_cluster,
    option,
    split_image,
)

ROUTES = ("ingress", "httproute")
DOMAIN = "ctl.localtest.me"
# The browser tests' probe page, served to Chromium from the host.
PAGES = ROOT / "tests" / "browser" / "pages"
# config.rateLimit of both releases, per minute.
DEFAULT_LIMIT = 100
SEARCH_LIMIT = 5

# (method, route template, status) -> answers, from one API pod's /metrics.
Answers = Counter[tuple[str, str, str]]


@dataclass
class Routed:
    """One release behind Traefik, and the Host Traefik routes to it."""

    route: str  # "ingress" or "httproute"
    release: Release
    host: str

    @property
    def origin(self) -> str:
        return self.release.origin

    @property
    def browser_url(self) -> str:
        """The API as the browser names it: this Host (mapped to the node), the NodePort."""
        return f"http://{self.host}:{TRAEFIK_NODE_PORT}"


@dataclass
class Controller:
    pod_ip: str  # Traefik's one pod: the only proxy the releases trust
    pod_url: str  # Traefik as pods reach it (its Service)
    host_url: str  # Traefik as the host reaches it (the NodePort on the node's address)
    routed: dict[str, Routed]

    def other(self, routed: Routed) -> Routed:
        (found,) = (r for r in self.routed.values() if r is not routed)
        return found


def host_address_seen_by_traefik() -> str:
    """The client address Traefik sees for a connection from the host to its NodePort.

    Not the node's address (10.250.0.1, the host's source address for it): kube-proxy
    marks NodePort traffic for masquerade (externalTrafficPolicy Cluster), and once DNATed
    to Traefik's pod the packet leaves through the pods' bridge, so its source becomes the
    bridge's own address. Read from the kernel here, not assumed.
    """
    done = subprocess.run(
        ["ip", "-json", "-4", "addr", "show", "dev", BRIDGE],
        capture_output=True, text=True, check=True, timeout=10,
    )  # fmt: skip
    (interface,) = json.loads(done.stdout)
    (address,) = (a["local"] for a in interface["addr_info"] if a.get("family") == "inet")
    return str(address)


def traefik_pod_ip(cluster: Cluster) -> str:
    selector = ",".join(f"{k}={v}" for k, v in TRAEFIK_LABELS.items())
    pods = cluster.core.list_namespaced_pod(
        TRAEFIK_NAMESPACE, label_selector=selector, _request_timeout=10
    ).items
    running = [p for p in pods if p.status.phase == "Running" and p.status.pod_ip]
    assert len(running) == 1, f"expected one running Traefik pod, found {len(running)}"
    return str(running[0].status.pod_ip)


# -- the page the browser opens ----------------------------------------------------------------


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def serve_pages(directory: Path = PAGES) -> Iterator[int]:
    """``directory`` over HTTP on 127.0.0.1 until the generator is closed; yields the port."""
    handler = functools.partial(_PageHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def page_origin(route: str, port: int) -> str:
    # A name of its own per route (Chromium maps both to 127.0.0.1): two sites, two origins.
    return f"http://app-{route}.{DOMAIN}:{port}"


# -- the releases ------------------------------------------------------------------------------


def routed_values(
    config: pytest.Config, route: str, host: str, origin: str, traefik_ip: str
) -> dict[str, Any]:
    """What makes a release one route's, over k8s/values-cluster.yaml (the images, Traefik's
    IngressClass, the Gateway as the HTTPRoute's parent, the NetworkPolicy for Traefik)."""
    repository, tag = split_image(option(config, "image") or "gatehouse-api:dev")
    values: dict[str, Any] = {
        "replicaCount": 2,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "config": {
            "environment": "dev",
            "allowedOrigins": [origin],
            "trustedHosts": [host],
            "rateLimit": {
                "default": f"{DEFAULT_LIMIT}/minute",
                "search": f"{SEARCH_LIMIT}/minute",
                "failureMode": "open",
            },
        },
        # Traefik's pod alone: another pod of the cluster's range connecting directly is a
        # client, not a proxy (k8s/values-cluster.yaml trusts the whole range).
        "proxy": {"trustedCIDRs": [str(ipaddress.ip_network(traefik_ip))]},
    }
    if route == "ingress":
        values["ingress"] = {
            "enabled": True,
            "hosts": [{"host": host, "paths": [{"path": "/", "pathType": "Prefix"}]}],
        }
    else:
        values["httpRoute"] = {"enabled": True, "hostnames": [host]}
    return values


def route_conditions(release: Release) -> dict[str, str]:
    """The HTTPRoute's conditions under the cluster's Gateway, by type (none until reported)."""
    from kubernetes import client

    route = client.CustomObjectsApi().get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", release.namespace, "httproutes", release.fullname,
        _request_timeout=10,
    )  # fmt: skip
    for parent in route.get("status", {}).get("parents", []):
        ref = parent["parentRef"]
        if (ref.get("name"), ref.get("namespace")) == (GATEWAY_NAME, TRAEFIK_NAMESPACE):
            return {c["type"]: c["status"] for c in parent.get("conditions", [])}
    return {}


def whoami_through(controller_url: str, host: str) -> int | str:
    """The status of GET /whoami for ``host`` through Traefik (its own 404 while it has no
    route), or why there was none."""
    request = urllib.request.Request(f"{controller_url}/whoami", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError as error:
        return str(error)


def wait_for(check: Callable[[], Any], expected: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last == expected:
            return
        time.sleep(1)
    raise AssertionError(f"no {what} after {timeout:.0f} s (last: {last!r})")


def install_behind_controller(
    cluster: Cluster, config: pytest.Config, page_port: int, tmp: Path
) -> Controller:
    if not on_local_cluster():
        pytest.skip(
            "traffic through Traefik (its NodePort, its Gateway) needs the local cluster "
            "(cluster/addons.py)"
        )
    traefik_ip = traefik_pod_ip(cluster)
    routed: dict[str, Routed] = {}
    for route in ROUTES:
        namespace = cluster.create_namespace(f"gh-ctl-{route}")
        host = f"api-{route}.{DOMAIN}"
        values = routed_values(config, route, host, page_origin(route, page_port), traefik_ip)
        routed[route] = Routed(route, Release(namespace, "gatehouse", values, True, (LOCAL_VALUES,)), host)  # fmt: skip
    # Both at once: most of an install is waiting for pods to become ready.
    with ThreadPoolExecutor(max_workers=len(routed)) as pool:
        for install in [pool.submit(helm_install, r.release, tmp) for r in routed.values()]:
            install.result()
    found = Controller(
        pod_ip=traefik_ip,
        pod_url=f"http://traefik.{TRAEFIK_NAMESPACE}.svc",
        host_url=traefik_host_url(),
        routed=routed,
    )
    httproute = routed["httproute"].release
    accepted = {"Accepted": "True", "ResolvedRefs": "True"}
    wait_for(
        lambda: {k: v for k, v in route_conditions(httproute).items() if k in accepted},
        accepted, 60,
        f"HTTPRoute {httproute.namespace}/{httproute.fullname} accepted on "
        f"{TRAEFIK_NAMESPACE}/{GATEWAY_NAME} (listener {GATEWAY_LISTENER})",
    )  # fmt: skip
    # Traefik loads a new route a moment after it appears, and the NetworkPolicy agent
    # admits Traefik to the new pods a moment after they start.
    for item in routed.values():
        wait_for(functools.partial(whoami_through, found.host_url, item.host), 200, 60,
                 f"answer from the API through Traefik for Host {item.host}")  # fmt: skip
    return found


# -- what each API pod answered ----------------------------------------------------------------

# Run inside an API container: its /metrics, from the management port (APP_METRICS_PORT)
# when it has one, else from the serving port.
READ_METRICS = (
    "import os, urllib.request;"
    "port = os.environ.get('APP_METRICS_PORT') or '8000';"
    "print(urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())"
)


def answers_by_pod(cluster: Cluster, release: Release) -> dict[str, Answers]:
    """Per API pod of ``release``, what it answered so far."""
    counts: dict[str, Answers] = {}
    for pod in cluster.api_pods(release):
        text = exec_python(cluster, release.namespace, pod.metadata.name, READ_METRICS)
        mine: Answers = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "gatehouse_http_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    mine[(labels["method"], labels["route"], labels["status"])] += int(sample.value)
        counts[pod.metadata.name] = mine
    return counts


def answered_since(
    before: dict[str, Answers], after: dict[str, Answers], method: str, route: str | None = None
) -> dict[str, Counter[str]]:
    """Per pod, its new answers to ``method`` (on ``route`` when given), by status."""
    served: dict[str, Counter[str]] = {}
    for pod, counts in after.items():
        earlier = before.get(pod, Counter())
        new: Counter[str] = Counter()
        for key, value in counts.items():
            seen_method, seen_route, status = key
            if seen_method == method and route in (None, seen_route):
                new[status] += value - earlier[key]
        served[pod] = +new  # drops statuses with nothing new
    return served
