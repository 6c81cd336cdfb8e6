"""Configuration files of each component, written under .cluster/config.

Each setting that differs from upstream's default is here because of a fact of this host
(cgroup v1, PID 1 is not systemd, a negative oom_score_adj is refused, no swap policy) or
to keep the cluster to itself (no DNS forwarding, no NodePort on the real interface).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import yaml

from cluster.layout import (
    APISERVER_PORT,
    BRIDGE,
    CLUSTER_DOMAIN,
    DNS_SERVICE_IP,
    NODE_IP,
    NODE_NAME,
    NODE_POD_CIDR,
    POD_CIDR,
    Layout,
)

PAUSE_IMAGE = "gatehouse.local/pause"
COREDNS_IMAGE = "gatehouse.local/coredns"
TRAEFIK_IMAGE = "gatehouse.local/traefik"


def server_url() -> str:
    return f"https://{NODE_IP}:{APISERVER_PORT}"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(layout: Layout, identity: str, context: str = "gatehouse") -> dict[str, Any]:
    """A kubeconfig for the client certificate pki/<identity>.crt, certificates inline."""
    pki = layout.pki
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gatehouse",
                "cluster": {
                    "server": server_url(),
                    "certificate-authority-data": b64(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate-data": b64(pki / f"{identity}.crt"),
                    "client-key-data": b64(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": "gatehouse", "user": identity}}],
        "current-context": context,
    }


def write(path: Path, content: str, mode: int = 0o600) -> Path:
    """Replace ``path`` atomically, and only when its content changes: kube-proxy watches
    its configuration file and exits when it changes (a rewrite shows it half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == content:
        return path
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(content)
    partial.chmod(mode)
    os.replace(partial, path)
    return path


def kubelet_config(layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This host: cgroup v1 only, no systemd as PID 1, swap policy not enforced.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        # A negative oom_score_adj is refused here; 0 is the kubelet's own share.
        "oomScoreAdj": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": NODE_IP,
        "healthzBindAddress": "127.0.0.1",
        "readOnlyPort": 0,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # Pods with dnsPolicy Default (CoreDNS) get no upstream: the cluster resolves only
        # its own names, and no query leaves the machine.
        "resolvConf": "",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        # ConfigMap volumes follow a change within about this period (the suite relies on it).
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "serializeImagePulls": False,
        # The cluster's images are imported, never pulled: keep them on a full-ish disk.
        "imageGCHighThresholdPercent": 98,
        "imageGCLowThresholdPercent": 95,
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "2%",
            "imagefs.available": "2%",
        },
        "maxPods": 60,
        "podCIDR": NODE_POD_CIDR,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
    }


def kube_proxy_config(layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",  # no IPVS on this kernel
        "clientConnection": {"kubeconfig": str(layout.config / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "oomScoreAdj": 0,
        # Leave the host's conntrack table as it is (kube-proxy would resize it).
        "conntrack": {"maxPerCore": 0, "min": 0},
        # NodePorts answer on the node's own address only, never on the real interface.
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }


def containerd_config(layout: Layout, pause_tag: str) -> str:
    root = layout.state / "containerd"
    return f"""\
# containerd for the Gatehouse test cluster (written by python -m cluster).
version = 3
root = "{root}/root"
state = "{layout.run}/containerd-state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.run}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.cri.v1.runtime"]
    # A negative oom_score_adj is refused on this host: clamp every sandbox and container
    # at containerd's own (0) instead of failing them.
    restrict_oom_score_adj = true
    enable_selinux = false
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          BinaryName = "/usr/sbin/runc"
          SystemdCgroup = false
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dirs = ["{layout.cni_bin}"]
      conf_dir = "{layout.config / "cni"}"
      max_conf_num = 1
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "{PAUSE_IMAGE}:{pause_tag}"
  [plugins."io.containerd.grpc.v1.cri"]
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
"""


def cni_conflist(layout: Layout) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "gatehouse",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    # No masquerade: pod traffic has nowhere to go but this machine.
                    "ipMasq": False,
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        # Its leases live and die with this cluster's run folder: in the
                        # default /var/lib/cni they outlived an unclean stop, and after a
                        # few of those the /24 ran out (no IP addresses available).
                        "dataDir": str(layout.ipam),
                        "ranges": [[{"subnet": NODE_POD_CIDR}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                # dockerd sets the FORWARD policy to DROP: this admits the pods' own traffic.
                {"type": "firewall", "backend": "iptables"},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        },
        indent=2,
    )


def write_all(layout: Layout, pause_tag: str) -> None:
    config = layout.config
    for identity in ("controller-manager", "scheduler", "kubelet", "kube-proxy", "kube-router"):
        write(config / f"{identity}.kubeconfig", yaml.safe_dump(kubeconfig(layout, identity)))
    write(layout.kubeconfig, yaml.safe_dump(kubeconfig(layout, "admin")))
    write(config / "kubelet.yaml", yaml.safe_dump(kubelet_config(layout)), 0o644)
    write(config / "kube-proxy.yaml", yaml.safe_dump(kube_proxy_config(layout)), 0o644)
    write(config / "containerd.toml", containerd_config(layout, pause_tag), 0o644)
    write(config / "cni" / "10-gatehouse.conflist", cni_conflist(layout), 0o644)
