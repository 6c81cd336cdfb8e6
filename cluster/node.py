"""The cluster's daemons, in start order, and bringing them up and down."""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from cluster import addons, build, configs, daemons, host, images, pki
from cluster.build import say
from cluster.layout import (
    APISERVER_PORT,
    CLUSTER_DOMAIN,
    DNS_SERVICE_IP,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    NODE_IP,
    NODE_NAME,
    POD_CIDR,
    SERVICE_CIDR,
    Layout,
)


def component_auth(layout: Layout, name: str) -> tuple[str, ...]:
    """The three kubeconfig flags every control-plane component takes."""
    kubeconfig = layout.config / f"{name}.kubeconfig"
    return (
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
    )


def daemon_list(layout: Layout) -> list[daemons.Daemon]:
    b, p, c = layout.bin, layout.pki, layout.config
    path_env = {
        **os.environ,
        "PATH": f"{b}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
    }
    etcd_peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    etcd_client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    return [
        # etcd on loopback only: the API server is its one client.
        daemons.Daemon(
            "etcd",
            (
                str(b / "etcd"),
                "--name=gatehouse",
                f"--data-dir={layout.state / 'etcd'}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=gatehouse={etcd_peer}",
                "--listen-metrics-urls=",
                "--log-level=warn",
            ),
        ),
        daemons.Daemon(
            "kube-apiserver",
            (
                str(b / "kube-apiserver"),
                f"--advertise-address={NODE_IP}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={APISERVER_PORT}",
                f"--etcd-servers={etcd_client}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={p / 'service-account.pub'}",
                f"--service-account-signing-key-file={p / 'service-account.key'}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
                "--authorization-mode=Node,RBAC",
                # The node name resolves nowhere: reach the kubelet at its InternalIP.
                "--kubelet-preferred-address-types=InternalIP",
                # PodSecurity is on by default; NodeRestriction is not. Both, as the issue asks.
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--profiling=false",
                "--v=1",
            ),
        ),
        daemons.Daemon(
            "kube-controller-manager",
            (
                str(b / "kube-controller-manager"),
                *component_auth(layout, "controller-manager"),
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                f"--service-account-private-key-file={p / 'service-account.key'}",
                f"--root-ca-file={p / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={POD_CIDR}",
                "--node-cidr-mask-size=24",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-signing-cert-file={p / 'ca.crt'}",
                f"--cluster-signing-key-file={p / 'ca.key'}",
                "--profiling=false",
                "--v=1",
            ),
        ),
        daemons.Daemon(
            "kube-scheduler",
            (
                str(b / "kube-scheduler"),
                *component_auth(layout, "scheduler"),
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ),
        ),
        daemons.Daemon(
            "containerd",
            (
                str(b / "containerd"),
                f"--config={c / 'containerd.toml'}",
            ),
            env=path_env,
        ),
        daemons.Daemon(
            "kubelet",
            (
                str(b / "kubelet"),
                f"--config={c / 'kubelet.yaml'}",
                f"--kubeconfig={c / 'kubelet.kubeconfig'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--root-dir={layout.kubelet_root}",
                f"--cert-dir={p / 'kubelet-serving'}",
                "--v=1",
            ),
            env=path_env,
        ),
        daemons.Daemon(
            "kube-proxy",
            (
                str(b / "kube-proxy"),
                f"--config={c / 'kube-proxy.yaml'}",
                "--v=1",
            ),
            env=path_env,
        ),
        # kube-router: only the NetworkPolicy controller (iptables + ipset).
        daemons.Daemon(
            "kube-router",
            (
                str(b / "kube-router"),
                f"--kubeconfig={c / 'kube-router.kubeconfig'}",
                f"--hostname-override={NODE_NAME}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-ipv6=false",
                "--metrics-port=0",
                "--health-port=0",
                "--v=1",
            ),
            env=path_env,
        ),
    ]


def by_name(layout: Layout) -> dict[str, daemons.Daemon]:
    return {daemon.name: daemon for daemon in daemon_list(layout)}


# -- readiness ------------------------------------------------------------------------------


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return int(response.status) == 200
    except OSError:
        return False


def admin_tls(layout: Layout) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    context.load_cert_chain(str(layout.pki / "admin.crt"), str(layout.pki / "admin.key"))
    return context


def apiserver_ready(layout: Layout) -> bool:
    return http_ok(f"https://{NODE_IP}:{APISERVER_PORT}/readyz", admin_tls(layout))


def kubectl(layout: Layout, *args: str, stdin: str | None = None, check: bool = True) -> str:
    command = [str(layout.bin / "kubectl"), f"--kubeconfig={layout.kubeconfig}", *args]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def node_ready(layout: Layout) -> bool:
    out = kubectl(layout, "get", "node", NODE_NAME, "-o", "json", check=False)
    if not out:
        return False
    conditions = json.loads(out).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def dns_answers(name: str = f"kubernetes.default.svc.{CLUSTER_DOMAIN}") -> str | None:
    """The A record CoreDNS gives for ``name`` through the kube-dns Service, or None."""
    query = struct.pack(">HHHHHH", 0x6768, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        try:
            sock.sendto(query, (DNS_SERVICE_IP, 53))
            reply = sock.recv(512)
        except OSError:
            return None
    answers = struct.unpack(">H", reply[6:8])[0]
    if reply[:2] != query[:2] or answers == 0 or reply[3] & 0x0F:
        return None
    # The last answer's RDATA: 4 bytes of an A record end the message (no extra sections).
    return socket.inet_ntoa(reply[-4:])


def traefik_answers() -> bool:
    """Traefik's own 404 (no route for this Host) on the host's NodePort: it serves."""
    url = addons.traefik_host_url()
    request = urllib.request.Request(url, headers={"Host": "nothing.invalid"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=2):  # noqa: S310
            return False
    except urllib.error.HTTPError as error:
        return error.code == 404
    except OSError:
        return False


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise daemons.DaemonError(f"no {what} after {timeout:.0f} s")


# -- up and down ----------------------------------------------------------------------------

STOP_ORDER = (
    "kube-router", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager",
    "kube-apiserver", "containerd", "etcd",
)  # fmt: skip


def pause_reference(layout: Layout) -> str:
    return f"{configs.PAUSE_IMAGE}:{layout.versions['kubernetes']}"


def coredns_reference(layout: Layout) -> str:
    return f"{configs.COREDNS_IMAGE}:{layout.versions['coredns']}"


def traefik_reference(layout: Layout) -> str:
    return f"{configs.TRAEFIK_IMAGE}:{layout.version('traefik')}"


def apply(layout: Layout, items: list[dict[str, Any]], *flags: str) -> None:
    kubectl(layout, "apply", *flags, "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))  # fmt: skip


def install_traefik(layout: Layout) -> None:
    """The Gateway API CRDs of the release Traefik is built with, then Traefik; returns once
    it serves on its NodePort and has accepted its GatewayClass."""
    module = build.module_dir("traefik", "sigs.k8s.io/gateway-api")
    crds = addons.gateway_api_crds(module)
    # Server-side: the largest CRDs exceed the annotation a client-side apply keeps.
    apply(layout, crds, "--server-side", "--field-manager=gatehouse-cluster")
    names = [f"crd/{doc['metadata']['name']}" for doc in crds
             if doc["kind"] == "CustomResourceDefinition"]  # fmt: skip
    kubectl(layout, "wait", "--for=condition=Established", "--timeout=60s", *names)
    apply(layout, addons.traefik(traefik_reference(layout)))
    kubectl(
        layout, "-n", addons.TRAEFIK_NAMESPACE, "rollout", "status", "deployment/traefik",
        "--timeout=180s",
    )  # fmt: skip
    wait_for(traefik_answers, 60, f"answer from Traefik at {addons.traefik_host_url()}")
    kubectl(layout, "wait", "--for=condition=Accepted", "--timeout=60s",
            f"gatewayclass/{addons.TRAEFIK_CLASS}")  # fmt: skip


def up(layout: Layout) -> None:
    started = time.monotonic()
    built = build.build_all(layout)
    build.link_binaries(layout, built)
    say(f"binaries ready ({time.monotonic() - started:.0f} s)")
    pki.make_pki(layout)
    configs.write_all(layout, layout.versions["kubernetes"])
    host.prepare(layout)
    named = by_name(layout)

    etcd = named["etcd"]
    etcd.start(layout)
    etcd.wait_until(
        layout, lambda: http_ok(f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health"), 60, "health"
    )
    apiserver = named["kube-apiserver"]
    apiserver.start(layout)
    apiserver.wait_until(layout, lambda: apiserver_ready(layout), 120, "/readyz")
    say(f"API server ready ({time.monotonic() - started:.0f} s)")
    for name in ("kube-controller-manager", "kube-scheduler"):
        named[name].start(layout)

    containerd = named["containerd"]
    containerd.start(layout)
    containerd.wait_until(
        layout, lambda: daemons.accepts_connections(layout.containerd_socket), 60, "socket"
    )
    images.import_static_image(layout, pause_reference(layout), built["pause"] / "pause",
                               {"Entrypoint": ["/pause"], "User": "65535:65535"})  # fmt: skip
    images.import_static_image(layout, coredns_reference(layout), built["coredns"] / "coredns",
                               {"Entrypoint": ["/coredns"], "User": "65532:65532"})  # fmt: skip
    images.import_static_image(layout, traefik_reference(layout), built["traefik"] / "traefik",
                               {"Entrypoint": ["/traefik"], "User": "65532:65532"})  # fmt: skip

    apply(layout, addons.kube_router_rbac())
    for name in ("kubelet", "kube-proxy"):
        named[name].start(layout)
    named["kubelet"].wait_until(layout, lambda: node_ready(layout), 180, "Ready node")
    # kube-router finds its node by name at start: only once the kubelet registered it.
    named["kube-router"].start(layout)
    say(f"node {NODE_NAME} Ready ({time.monotonic() - started:.0f} s)")

    apply(layout, addons.coredns(coredns_reference(layout)))
    kubectl(
        layout, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=180s"
    )
    wait_for(dns_answers, 60, "DNS answer from CoreDNS")
    say(f"CoreDNS answers ({time.monotonic() - started:.0f} s)")
    install_traefik(layout)
    say(f"Traefik {layout.version('traefik')} serves Ingress and Gateway API "
        f"{layout.version('gateway-api')} ({time.monotonic() - started:.0f} s)")  # fmt: skip
    # A daemon that died while others started is a failed start, not a cluster.
    for daemon in daemon_list(layout):
        if daemon.pid(layout) is None:
            raise daemons.DaemonError(
                f"{daemon.name} is not running; last lines of {daemon.log(layout)}:\n"
                f"{daemons.log_tail(daemon.log(layout))}"
            )


def running(layout: Layout) -> dict[str, int | None]:
    return {daemon.name: daemon.pid(layout) for daemon in daemon_list(layout)}


def down(layout: Layout) -> list[str]:
    stopped = daemons.stop_all(layout, STOP_ORDER)
    host.clean(layout)
    return stopped
