"""Build each component once from its pinned module, into a cache keyed by what decides it.

A component's key is a hash of its go.mod and go.sum, the Go version and the build flags, so
a cached binary is reused until one of them changes, and two checkouts share the cache. Go's
own build cache makes a rebuild after a change incremental; the binary cache makes an
unchanged one free (no link step, which is most of a warm k8s build).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.layout import MODULES, Layout


class BuildError(RuntimeError):
    """A build step failed; the message names the component and carries the tail of its log."""


@dataclass(frozen=True)
class Component:
    name: str  # the folder under cluster/modules
    module: str
    # package path (relative to the module) -> binary name
    binaries: dict[str, str]
    ldflags: tuple[str, ...] = ()


def kubernetes_ldflags(version: str) -> tuple[str, ...]:
    # What hack/lib/version.sh sets, so `kubectl version` and Helm's kubeVersion see the
    # real release instead of v0.0.0-master.
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return tuple(flags)


# What Traefik's release workflow sets (.github/workflows/release.yaml of the v3.7 branch).
TRAEFIK_CODENAME = "langres"


def traefik_ldflags(version: str, released: str) -> tuple[str, ...]:
    # As Traefik's Makefile and .goreleaser.yml set them; unset, it reports "dev". The build
    # date is the release's (the module's time on the proxy), so the flags stay the same.
    package = "github.com/traefik/traefik/v3/pkg/version"
    return (
        f"-X {package}.Version={version}",
        f"-X {package}.Codename={TRAEFIK_CODENAME}",
        f"-X {package}.BuildDate={released}",
    )


def skaffold_ldflags(version: str, released: str) -> tuple[str, ...]:
    # As Skaffold's Makefile sets them (GO_LDFLAGS); unset, `skaffold version` prints nothing.
    # The build date is the release's (the module's time on the proxy), so the flags stay the same.
    package = "github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version"
    return (f"-X {package}.version={version}", f"-X {package}.buildDate={released}")


def components(layout: Layout) -> list[Component]:
    versions = layout.versions
    return [
        Component(
            "kubernetes",
            "k8s.io/kubernetes",
            {
                f"cmd/{name}": name
                for name in (
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kubelet",
                    "kube-proxy",
                    "kubectl",
                )
            },
            ldflags=kubernetes_ldflags(versions["kubernetes"]),
        ),
        Component(
            "etcd",
            "go.etcd.io/etcd/server/v3",
            {"": "etcd"},
            ldflags=(f"-X go.etcd.io/etcd/api/v3/version.GitSHA={versions['etcd']}",),
        ),
        Component(
            "containerd",
            "github.com/containerd/containerd/v2",
            {
                "cmd/containerd": "containerd",
                "cmd/containerd-shim-runc-v2": "containerd-shim-runc-v2",
                "cmd/ctr": "ctr",
            },
        ),
        Component(
            "cni",
            "github.com/containernetworking/plugins",
            {
                "plugins/main/bridge": "bridge",
                "plugins/main/loopback": "loopback",
                "plugins/ipam/host-local": "host-local",
                "plugins/meta/portmap": "portmap",
                "plugins/meta/firewall": "firewall",
            },
        ),
        Component("coredns", "github.com/coredns/coredns", {"": "coredns"}),
        Component(
            "kube-router",
            "github.com/cloudnativelabs/kube-router/v2",
            {"cmd/kube-router": "kube-router"},
            ldflags=(
                f"-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={versions['kube-router']}",
            ),
        ),
        Component(
            "traefik",
            "github.com/traefik/traefik/v3",
            {"cmd/traefik": "traefik"},
            ldflags=traefik_ldflags(
                layout.addon_versions["traefik"],
                module_time("traefik", "github.com/traefik/traefik/v3"),
            ),
        ),
        Component(
            "skaffold",
            "github.com/GoogleContainerTools/skaffold/v2",
            {"cmd/skaffold": "skaffold"},
            ldflags=skaffold_ldflags(
                layout.tool_versions["skaffold"],
                module_time("skaffold", "github.com/GoogleContainerTools/skaffold/v2"),
            ),
        ),
    ]


def go_version() -> str:
    return subprocess.run(
        ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
    ).stdout.strip()


def go_env() -> dict[str, str]:
    # Static binaries (no cgo: they run inside scratch images too), the Go on this machine
    # (never a downloaded toolchain), and exactly the dependency versions go.sum records.
    env = dict(os.environ)
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=readonly -trimpath")
    return env


def cache_key(component: Component, go: str) -> str:
    digest = hashlib.sha256()
    folder = MODULES / component.name
    for name in ("go.mod", "go.sum"):
        digest.update((folder / name).read_bytes())
    # A module a local replace points at (traefik's ./ext) is part of the build too.
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.relative_to(folder).as_posix() not in ("go.mod", "go.sum"):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    digest.update(go.encode())
    digest.update(repr(sorted(component.binaries.items())).encode())
    digest.update(" ".join(component.ldflags).encode())
    return digest.hexdigest()[:12]


def binary_dir(layout: Layout, component: Component, go: str) -> Path:
    version = layout.version(component.name)
    return layout.cache / "bin" / f"{component.name}-{version}-{cache_key(component, go)}"


def say(message: str) -> None:
    print(f"cluster: {message}", file=sys.stderr, flush=True)


def build_component(layout: Layout, component: Component, go: str) -> Path:
    """The folder holding the component's binaries, built now if the cache lacks them."""
    out = binary_dir(layout, component, go)
    if (out / ".complete").exists():
        return out
    version = layout.version(component.name)
    say(f"building {component.name} {version} ({', '.join(component.binaries.values())})")
    started = time.monotonic()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log = layout.logs / f"build-{component.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    ldflags = " ".join(("-s", "-w", *component.ldflags))
    packages = [f"{component.module}/{path}".rstrip("/") for path in component.binaries]
    env = go_env()
    with log.open("w") as sink:
        if len(packages) == 1:
            # One package: name the output file (etcd's main package is ".../server/v3").
            targets = [str(partial / next(iter(component.binaries.values())))]
        else:
            targets = [f"{partial}/"]
        command = ["go", "build", "-ldflags", ldflags, "-o", *targets, *packages]
        done = subprocess.run(
            command, cwd=MODULES / component.name, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise BuildError(f"go build of {component.name} failed (log {log}):\n{tail}")
    # `go build -o dir/` names each binary after its package's last element.
    for path, name in component.binaries.items():
        built = partial / (path.rsplit("/", 1)[-1] if path else name)
        if built.name != name and built.exists():
            built.rename(partial / name)
        if not (partial / name).exists():
            raise BuildError(f"go build of {component.name} made no {name}")
    (partial / ".complete").write_text(f"{version} built in {time.monotonic() - started:.0f} s\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    say(f"built {component.name} {version} in {time.monotonic() - started:.0f} s -> {out}")
    return out


def build_pause(layout: Layout) -> Path:
    """Kubernetes' own pause.c (in the k8s.io/kubernetes module), linked statically."""
    version = layout.versions["kubernetes"]
    out = layout.cache / "bin" / f"pause-{version}" / "pause"
    if out.exists():
        return out
    source = module_dir("kubernetes", "k8s.io/kubernetes") / "build" / "pause" / "linux" / "pause.c"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    subprocess.run(
        ["gcc", "-Os", "-static", f'-DVERSION="{version}"', "-o", str(partial), str(source)],
        check=True,
    )
    subprocess.run(["strip", str(partial)], check=True)
    partial.rename(out)
    return out


def go_module_json(component: str, *command: str) -> dict[str, Any]:
    """A ``go ... -json`` command's answer, run in the component's pinned module."""
    done = subprocess.run(
        ["go", *command],
        cwd=MODULES / component,
        env=go_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def module_dir(component: str, module: str) -> Path:
    """Where Go unpacked the pinned module (downloaded first when missing)."""
    return Path(go_module_json(component, "mod", "download", "-json", module)["Dir"])


def module_time(component: str, module: str) -> str:
    """When the pinned version of ``module`` was published (``go list -m``'s Time)."""
    return str(go_module_json(component, "list", "-m", "-json", module)["Time"])


def build_all(layout: Layout) -> dict[str, Path]:
    """Every component's binary folder, by component name; builds only what is missing."""
    go = go_version()
    built = {
        component.name: build_component(layout, component, go) for component in components(layout)
    }
    built["pause"] = build_pause(layout).parent
    return built


def link_binaries(layout: Layout, built: dict[str, Path]) -> None:
    """``.cluster/bin`` (and ``bin/cni``): links to the cached binaries of this cluster."""
    shutil.rmtree(layout.bin, ignore_errors=True)
    layout.cni_bin.mkdir(parents=True)
    for name, folder in built.items():
        target_dir = layout.cni_bin if name == "cni" else layout.bin
        for binary in folder.iterdir():
            if binary.name.startswith("."):
                continue
            (target_dir / binary.name).symlink_to(binary)
