"""The container runtime: API pods as containers of the built image, on the host network.

``Stack(runtime="container")`` runs every API replica with ``docker`` instead of as a
local process. The container is what the kubelet would create from the rendered pod:

- the image is ``IMAGE`` (default ``gatehouse-api:dev``, what ``make image`` builds),
  not the chart's tag (a cluster pulls that; here the working tree's build is the one
  to test); the command and args are the rendered ones with ``stack.loopback``'s listen
  address, port and Service overrides, and ``command[0]`` is found on the image's PATH;
- the environment is the rendered one (ConfigMap, Secret, fieldRefs) over the image's;
- the security context becomes docker flags (``security_flags``): runAsUser/runAsGroup
  -> ``--user``, fsGroup and supplementalGroups -> ``--group-add``,
  readOnlyRootFilesystem -> ``--read-only``, capabilities -> ``--cap-drop`` /
  ``--cap-add``, allowPrivilegeEscalation false -> ``--security-opt no-new-privileges``,
  seccomp RuntimeDefault -> docker's default profile (no flag); anything else in a
  securityContext is refused rather than silently dropped;
- volumes (``volume_flags``): an emptyDir is a tmpfs at its mountPath (sizeLimit ->
  ``size=``); a ConfigMap or Secret volume is a read-only bind mount of the pod's
  kubelet-style directory (``stack.kubelet.ProjectedVolume``), so an update swaps
  ``..data`` inside the container exactly as the kubelet's does;
- resource limits -> ``--memory`` / ``--cpus``;
- ``--network host``: the container binds its pod's 127.x address like the process does.

``docker create`` makes the container (so it exists before anything can fail), then
``docker start --attach`` runs it as the harness's ``Process``: its output goes to the
pod's log file and the client's exit is the container's. Stopping is ``docker stop``
with the grace period, then ``docker rm --force``; a SIGKILL is ``docker kill``. Every
container carries the ``gatehouse.stack`` label (the stack's directory), so whatever is
left after a failure is found and removed, and tests can check nothing is.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .loopback import SYSTEM_PATH, LoopbackError
from .processes import Process, StartError
from .render import ROOT

DEFAULT_IMAGE = "gatehouse-api:dev"
LABEL = "gatehouse.stack"
# Pods of these components run as containers; Redis and nginx stay local processes.
COMPONENTS = frozenset({"api"})

# securityContext fields this module translates (others are refused, see security_flags).
_CONTAINER_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "readOnlyRootFilesystem",
    "capabilities",
    "allowPrivilegeEscalation",
    "seccompProfile",
    "privileged",
}
_POD_FIELDS = {
    "runAsUser",
    "runAsGroup",
    "runAsNonRoot",
    "fsGroup",
    "supplementalGroups",
    "seccompProfile",
}


def docker_binary() -> str:
    found = shutil.which("docker", path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if found is None:
        raise StartError("no container engine: the docker client is not installed")
    return found


def client_env() -> dict[str, str]:
    """The docker client's own environment: where its engine and configuration are."""
    env = {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("DOCKER_")})
    return env


def docker(
    *args: str, timeout: float = 60, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A docker client command; the caller reads ``returncode`` (nothing raises on failure)."""
    return subprocess.run(  # noqa: S603 - fixed client, argv from the render, no shell
        [docker_binary(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else client_env(),
        check=False,
    )


def _last_line(text: str, fallback: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else fallback


def ensure_engine() -> bool:
    """An engine that answers (``scripts/docker-engine start``); True when it was started
    here. No engine: StartError with that script's one line."""
    try:
        result = subprocess.run(  # noqa: S603 - the project's script
            [str(ROOT / "scripts" / "docker-engine"), "start"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StartError(f"no container engine ({error})") from None
    if result.returncode != 0:
        line = _last_line(result.stderr, "no container engine")
        raise StartError(line.removeprefix("docker-engine: "))
    return result.stdout.strip() == "started"


def ensure_image(image: str) -> None:
    """``image`` present locally, built by ``scripts/build-image`` when it is not."""
    ensure_engine()
    if docker("image", "inspect", image).returncode == 0:
        return
    try:
        result = subprocess.run(  # noqa: S603 - the project's script
            [str(ROOT / "scripts" / "build-image")],
            cwd=ROOT,
            env={**os.environ, "IMAGE": image},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StartError(
            f"image {image} is missing and scripts/build-image failed: {error}"
        ) from None
    if result.returncode != 0 or docker("image", "inspect", image).returncode != 0:
        line = _last_line(result.stderr, f"exit status {result.returncode}").removeprefix(
            "build-image: "
        )
        raise StartError(f"image {image} is missing and scripts/build-image failed: {line}")


def labelled(value: str, *, running_only: bool = False) -> list[str]:
    """Names of the containers labelled ``gatehouse.stack=<value>`` (any state by default)."""
    args = ["ps", "--filter", f"label={LABEL}={value}", "--format", "{{.Names}}"]
    if not running_only:
        args.insert(1, "--all")
    result = docker(*args)
    if result.returncode != 0:
        raise StartError(f"docker ps failed: {_last_line(result.stderr, 'no output')}")
    return sorted(result.stdout.split())


def remove_labelled(value: str) -> None:
    """``docker rm --force`` every container labelled with ``value``."""
    with contextlib.suppress(StartError, OSError, subprocess.TimeoutExpired):
        names = labelled(value)
        if names:
            docker("rm", "--force", *names)


# -- the pod spec as docker flags ---------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity_bytes(quantity: object) -> int:
    """A Kubernetes memory/storage quantity (``64Mi``, ``1G``, ``1000``) in bytes."""
    match = _QUANTITY.match(str(quantity))
    if match is None or match.group(2) not in _UNITS:
        raise LoopbackError(f"cannot read the quantity {quantity!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def cpus(quantity: object) -> str:
    """A Kubernetes CPU quantity (``1``, ``500m``) as docker's ``--cpus``."""
    text = str(quantity)
    if text.endswith("m"):
        return f"{int(text[:-1]) / 1000:g}"
    return f"{float(text):g}"


def security_flags(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    """The pod's and container's securityContext as docker flags (the container's wins)."""
    pod_context: Mapping[str, Any] = pod_spec.get("securityContext") or {}
    context: Mapping[str, Any] = container.get("securityContext") or {}
    unknown = sorted(
        [f"pod securityContext.{key}" for key in set(pod_context) - _POD_FIELDS]
        + [f"securityContext.{key}" for key in set(context) - _CONTAINER_FIELDS]
    )
    if unknown:
        raise LoopbackError(f"{container['name']}: not translated to docker: {', '.join(unknown)}")

    def field(name: str) -> Any:
        return context.get(name, pod_context.get(name))

    flags: list[str] = []
    user, group = field("runAsUser"), field("runAsGroup")
    if user is not None:
        flags += ["--user", f"{int(user)}:{int(group)}" if group is not None else str(int(user))]
    elif group is not None:
        raise LoopbackError(f"{container['name']}: runAsGroup without runAsUser is not translated")
    if field("runAsNonRoot") and user is not None and int(user) == 0:
        # The kubelet refuses to start such a container; so does the stack.
        raise LoopbackError(f"{container['name']}: runAsNonRoot with runAsUser 0")
    groups = [pod_context.get("fsGroup"), *(pod_context.get("supplementalGroups") or ())]
    for extra in groups:
        if extra is not None:
            flags += ["--group-add", str(int(extra))]
    if context.get("privileged"):
        flags.append("--privileged")
    if context.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    capabilities: Mapping[str, Sequence[str]] = context.get("capabilities") or {}
    for capability in capabilities.get("drop") or ():
        flags += ["--cap-drop", str(capability)]
    for capability in capabilities.get("add") or ():
        flags += ["--cap-add", str(capability)]
    if context.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    seccomp = (field("seccompProfile") or {}).get("type")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):  # RuntimeDefault: docker's default profile
        raise LoopbackError(f"{container['name']}: seccompProfile {seccomp} is not translated")
    return flags


def volume_flags(
    container: Mapping[str, Any],
    volumes: Mapping[str, Mapping[str, Any]],
    local_dirs: Mapping[str, Path],
) -> list[str]:
    """Each volumeMount: a tmpfs for an emptyDir, a read-only bind mount of the pod's
    kubelet-style directory for a ConfigMap or Secret."""
    flags: list[str] = []
    for mount in container.get("volumeMounts") or ():
        path, name = str(mount["mountPath"]), str(mount["name"])
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise LoopbackError(f"{container['name']}: subPath mount {path} is not translated")
        volume = volumes[name]
        if "emptyDir" in volume:
            options = ["rw", "nosuid", "nodev", "mode=1777"]
            size = (volume["emptyDir"] or {}).get("sizeLimit")
            if size is not None:
                options.append(f"size={quantity_bytes(size)}")
            flags += ["--tmpfs", f"{path}:{','.join(options)}"]
        elif "configMap" in volume or "secret" in volume:
            # Always read-only, as the kubelet mounts them whatever readOnly says.
            flags += ["--volume", f"{local_dirs[name]}:{path}:ro"]
        else:
            raise LoopbackError(f"{container['name']}: volume {name} is not translated")
    return flags


def resource_flags(container: Mapping[str, Any]) -> list[str]:
    limits: Mapping[str, Any] = (container.get("resources") or {}).get("limits") or {}
    flags: list[str] = []
    if "memory" in limits:
        flags += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        flags += ["--cpus", cpus(limits["cpu"])]
    return flags


def create_args(
    *,
    name: str,
    labels: Mapping[str, str],
    image: str,
    pod_spec: Mapping[str, Any],
    container: Mapping[str, Any],
    local_dirs: Mapping[str, Path],
    env_names: Sequence[str],
    argv: Sequence[str],
) -> list[str]:
    """``docker create`` arguments for one rendered container, already localised.

    Each variable is passed by name (``--env NAME``): docker takes the value from the
    client's environment, so no value (the Redis password) appears on a command line.
    """
    if not argv:
        raise LoopbackError(f"{container['name']}: no command (the image's entrypoint is not used)")
    options = ["create", "--name", name, "--network", "host", "--init=false"]
    for key, value in labels.items():
        options += ["--label", f"{key}={value}"]
    options += security_flags(pod_spec, container)
    options += volume_flags(container, pod_spec_volumes(pod_spec), local_dirs)
    options += resource_flags(container)
    if container.get("workingDir"):
        options += ["--workdir", str(container["workingDir"])]
    for variable in env_names:
        options += ["--env", variable]
    return [*options, "--entrypoint", argv[0], image, *argv[1:]]


def pod_spec_volumes(pod_spec: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(volume["name"]): volume for volume in pod_spec.get("volumes") or ()}


class ContainerProcess(Process):
    """One container: created by ``docker create``, run by an attached ``docker start``.

    ``pid`` is the attached client's (in the stack's process groups); the container's own
    processes belong to the engine and are reached through docker commands only.
    """

    def __init__(
        self,
        name: str,
        container: str,
        create: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
    ) -> None:
        self.container = container
        self.create = list(create)
        self.create_env = {**client_env(), **env}
        super().__init__(
            name,
            [docker_binary(), "start", "--attach", container],
            client_env(),
            cwd=cwd,
            log_path=log_path,
        )

    def start(self) -> None:
        docker("rm", "--force", self.container)  # a previous run under this name
        result = docker(*self.create, env=self.create_env)
        if result.returncode != 0:
            raise StartError(
                f"{self.name}: docker create failed: {_last_line(result.stderr, 'no output')}"
            )
        super().start()

    def stop(self, grace: float = 10.0) -> None:
        """``docker stop`` (SIGTERM, SIGKILL after ``grace``), then remove the container."""
        docker("stop", "--time", str(int(grace)), self.container, timeout=grace + 30)
        docker("rm", "--force", self.container)
        super().stop(grace=5)  # the attached client has ended with the container

    def kill(self) -> None:
        """``docker kill``: SIGKILL to the container, which stays (exited) until stopped."""
        docker("kill", self.container)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
