"""What the host needs before the node starts, and how it is put back afterwards.

Facts of this machine met here: ``/`` has private mount propagation (the kubelet needs
shared, for volume mounts to reach containers); dockerd sets the FORWARD policy to DROP
(the CNI firewall plugin admits pod traffic); the hostname resolves to 127.0.0.1 (the node
gets its own address on an interface of its own).

Two guards keep all cluster traffic on this machine: Service addresses without a
kube-proxy rule are routed into that interface (a dead end) instead of out of
the default route, and nothing from the pod network is forwarded out of any interface but
the pods' bridge.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from cluster.layout import BRIDGE, NODE_INTERFACE, NODE_IP, POD_CIDR, SERVICE_CIDR, Layout

# Where host-local kept the pod network's leases before they moved to Layout.ipam.
LEGACY_IPAM = Path("/var/lib/cni/networks/gatehouse")
GUARD_CHAIN = "GATEHOUSE-GUARD"
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
    "net/bridge/bridge-nf-call-ip6tables": "1",
}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done


def prepare(layout: Layout) -> None:
    # Shared propagation, so mounts the kubelet makes under its root reach the containers.
    sh("mount", "--make-rshared", "/")
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value)
    if sh("ip", "link", "show", NODE_INTERFACE, check=False).returncode != 0:
        # A bridge with no ports: this kernel has no dummy interfaces, and a portless bridge
        # is as much a dead end (what is routed into it goes nowhere).
        sh("ip", "link", "add", NODE_INTERFACE, "type", "bridge")
    sh("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_INTERFACE)
    sh("ip", "link", "set", NODE_INTERFACE, "up")
    # Unmatched Service and pod addresses sink here instead of taking the default route;
    # the bridge's own /24 route (more specific) still wins for live pods.
    for cidr in (SERVICE_CIDR, POD_CIDR):
        sh("ip", "route", "replace", cidr, "dev", NODE_INTERFACE)
    if sh("iptables", "-w", "-n", "-L", GUARD_CHAIN, check=False).returncode != 0:
        sh("iptables", "-w", "-N", GUARD_CHAIN)
    sh("iptables", "-w", "-F", GUARD_CHAIN)
    sh("iptables", "-w", "-A", GUARD_CHAIN, "-s", POD_CIDR, "!", "-o", BRIDGE, "-j", "DROP")
    if sh("iptables", "-w", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode != 0:
        sh("iptables", "-w", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)
    # No pod runs before containerd starts, so no lease is live: any left by a stop that
    # never ran (a killed session) would only shrink the pods' /24.
    forget_leases(layout)
    for folder in (layout.state, layout.run, layout.kubelet_root):
        folder.mkdir(parents=True, exist_ok=True)


def forget_leases(layout: Layout) -> None:
    shutil.rmtree(layout.ipam, ignore_errors=True)
    shutil.rmtree(LEGACY_IPAM, ignore_errors=True)  # the network's name is ours


def mounts_under(prefixes: list[Path]) -> list[str]:
    """Mount points below any of ``prefixes``, deepest first (unmount order)."""
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(p) or point.startswith(f"{p}/") for p in prefixes):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(prefixes: list[Path]) -> None:
    for point in mounts_under(prefixes):
        sh("umount", "-l", point, check=False)


def kubepods_cgroups() -> list[Path]:
    """Every cgroup the kubelet made (kubepods*), deepest first, across v1 hierarchies."""
    found: list[Path] = []
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.exists() else []:
        for top in hierarchy.glob("kubepods*"):
            found.extend(p for p in top.rglob("*") if p.is_dir())
            found.append(top)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_pods() -> None:
    """SIGKILL every process in the kubelet's cgroups (containers, whatever they forked)."""
    for group in kubepods_cgroups():
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)


def remove_cgroups() -> None:
    for group in kubepods_cgroups():
        with contextlib.suppress(OSError):
            group.rmdir()


def kill_shims(layout: Layout) -> None:
    """containerd's runc shims for this cluster (they outlive containerd by design)."""
    socket = str(layout.containerd_socket)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"containerd-shim-runc-v2") and socket.encode() in argv:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), 9)


def iptables_chains(table: str) -> list[str]:
    listing = sh("iptables-save", "-t", table, check=False).stdout
    return [line[1:].split()[0] for line in listing.splitlines() if line.startswith(":")]


def remove_rules() -> None:
    """The chains kube-proxy, kube-router, the CNI plugins and this module made, and
    every jump into them; the built-in chains and dockerd's own rules stay."""
    ours = ("KUBE-", "CNI-", GUARD_CHAIN)
    for table in ("filter", "nat", "mangle"):
        listing = sh("iptables-save", "-t", table, check=False).stdout
        for line in listing.splitlines():
            # A rule in a built-in chain (or dockerd's) that jumps into one of ours.
            if line.startswith("-A ") and not line.split()[1].startswith(ours):
                parts = shlex.split(line)
                if "-j" in parts and parts[parts.index("-j") + 1].startswith(ours):
                    sh("iptables", "-w", "-t", table, "-D", *parts[1:], check=False)
        chains = [chain for chain in iptables_chains(table) if chain.startswith(ours)]
        for chain in chains:
            sh("iptables", "-w", "-t", table, "-F", chain, check=False)
        for chain in chains:
            sh("iptables", "-w", "-t", table, "-X", chain, check=False)
    for name in sh("ipset", "list", "-n", check=False).stdout.split():
        if name.startswith(("KUBE-", "kube-router")):
            sh("ipset", "destroy", name, check=False)


def remove_network() -> None:
    for cidr in (SERVICE_CIDR, POD_CIDR):
        sh("ip", "route", "del", cidr, "dev", NODE_INTERFACE, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)
    sh("ip", "link", "del", NODE_INTERFACE, check=False)
    # Pod network namespaces the CNI plugins left (containerd names them cni-<uuid>).
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else []:
        sh("umount", "-l", str(netns), check=False)
        netns.unlink(missing_ok=True)


def clean(layout: Layout) -> None:
    """Undo prepare() and everything the node left behind; safe to run more than once."""
    kill_pods()
    kill_shims(layout)
    unmount_all([layout.state, layout.run])
    remove_cgroups()
    remove_rules()
    remove_network()
    shutil.rmtree(layout.run, ignore_errors=True)
    forget_leases(layout)
    # The logs stay for reading after a stop (a failed CI run prints their tails).
    for entry in layout.state.iterdir() if layout.state.exists() else []:
        if entry != layout.logs:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
