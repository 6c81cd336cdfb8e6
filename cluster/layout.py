"""Where the cluster keeps things, its addresses, and the versions pinned in the repo."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "cluster" / "modules"

NODE_NAME = "gatehouse-node"
# The node's own address lives on an interface of its own (a portless bridge): the hostname resolves to 127.0.0.1,
# which pods cannot reach, and the machine's real interface is not ours to use. Everything
# the cluster serves is on this address, on loopback, or inside the pods' own namespaces.
NODE_INTERFACE = "gatehouse0"
NODE_IP = "10.250.0.1"
POD_CIDR = "10.244.0.0/16"  # kind's, so k8s/values-dev.yaml's trusted range is the pods'
NODE_POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
BRIDGE = "cni0"
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380


def pinned_version(component: str, module: str) -> str:
    """The version ``cluster/modules/<component>/go.mod`` requires of ``module``."""
    text = (MODULES / component / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if not match:
        raise ValueError(f"cluster/modules/{component}/go.mod does not require {module}")
    return match.group(1)


@dataclass(frozen=True)
class Layout:
    """The state folder (in the checkout, ignored by git) and the build cache (outside it)."""

    state: Path
    cache: Path
    # Unix sockets stay short (108 bytes at most) wherever the checkout is.
    run: Path

    @classmethod
    def default(cls) -> Layout:
        cache = os.environ.get("GATEHOUSE_CLUSTER_CACHE") or str(
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gatehouse-cluster"
        )
        state = os.environ.get("GATEHOUSE_CLUSTER_STATE") or str(ROOT / ".cluster")
        return cls(state=Path(state), cache=Path(cache), run=Path("/run/gatehouse-cluster"))

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def config(self) -> Path:
        return self.state / "config"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def bin(self) -> Path:
        """Links to the cached binaries this cluster runs (what `export PATH=` points at)."""
        return self.state / "bin"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def ipam(self) -> Path:
        """The pods' IP leases (host-local); removed with the run folder on stop."""
        return self.run / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def cni_bin(self) -> Path:
        return self.bin / "cni"

    @cached_property
    def versions(self) -> dict[str, str]:
        return {
            "kubernetes": pinned_version("kubernetes", "k8s.io/kubernetes"),
            "etcd": pinned_version("etcd", "go.etcd.io/etcd/server/v3"),
            "containerd": pinned_version("containerd", "github.com/containerd/containerd/v2"),
            "cni": pinned_version("cni", "github.com/containernetworking/plugins"),
            "coredns": pinned_version("coredns", "github.com/coredns/coredns"),
            "kube-router": pinned_version(
                "kube-router", "github.com/cloudnativelabs/kube-router/v2"
            ),
        }

    @cached_property
    def addon_versions(self) -> dict[str, str]:
        """The ingress controller the cluster runs as pods, and the Gateway API CRDs it serves:
        both pinned by cluster/modules/traefik/go.mod (the CRDs are those of the gateway-api
        release Traefik is built with)."""
        return {
            "traefik": pinned_version("traefik", "github.com/traefik/traefik/v3"),
            "gateway-api": pinned_version("traefik", "sigs.k8s.io/gateway-api"),
        }

    @cached_property
    def tool_versions(self) -> dict[str, str]:
        """Developer tools built with the cluster and linked into ``bin`` beside kubectl, used
        against it but run by no daemon: Skaffold (skaffold.yaml's run, dev and verify)."""
        return {
            "skaffold": pinned_version("skaffold", "github.com/GoogleContainerTools/skaffold/v2"),
        }

    def version(self, component: str) -> str:
        """The pinned version of a node component, an addon or a tool."""
        return {**self.versions, **self.addon_versions, **self.tool_versions}[component]
