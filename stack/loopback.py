"""Every difference between a pod in the cluster and its process on loopback, in one place.

The rendered container spec is run as written except for these overrides, each of
which exists because the thing cannot be the same without Kubernetes:

1. The executable: a container finds ``python`` (the API runs ``python -m gatehouse``)
   on its image's PATH; here it is the project virtualenv's (``.venv/bin/python``,
   where gatehouse is installed), and ``redis-server`` is Debian's.
2. The listen address: a pod listens on all interfaces of its own network namespace
   (``--host 0.0.0.0``; Redis binds everything by default); here every pod shares the
   host's loopback, so it binds its own 127.x address instead (``--host`` / ``--bind``,
   by program: ``program_name`` names ``python -m gatehouse`` "gatehouse").
3. The port: each container port (8000, 9090, 6379) becomes a free port on that address,
   so two stacks (or a developer's ``make run``) never collide: in ``--port`` and in the
   variables that name a listen port (``APP_METRICS_PORT``).
4. Service names: ``redis://gatehouse-redis:6379`` names a Service that cluster DNS
   and kube-proxy would resolve; here the name and port become the endpoint's
   127.x address and port. Only ``scheme://host:port`` values are touched.
5. Mounted paths: a value under a volume's ``mountPath`` (``/etc/gatehouse/...``,
   ``/data``) becomes the same path under the pod's local volume directory, which the
   kubelet layout (``stack.kubelet.ProjectedVolume``) fills for ConfigMaps and Secrets.
6. The process environment: a container's starts empty apart from its image's; here it
   starts with PATH (the venv first), HOME and LANG only, never the caller's APP_*.

Not modelled, on purpose: ``runAsUser`` and the rest of the security context (the
processes run as the caller), resource limits, and the preStop sleep (the harness
removes a pod from nginx and waits for the reload before SIGTERM, which is what the
sleep buys in a cluster).

The container runtime (``stack.containers``, ``localise_in_container``) keeps only 2, 3
and 4: the executable is the image's, mounted paths are real mounts at their
mountPath, the environment is the image's plus the container's, and the security
context and limits are applied by the engine.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

# 1. Executables: the virtualenv that runs the harness (the project's .venv) first.
VENV_BIN = Path(sys.prefix) / "bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# 2. The flag that sets the listen address, per program (as ``program_name`` names it).
LISTEN_ADDRESS_FLAGS = {
    "gatehouse": "--host",
    "redis-server": "--bind",
    "valkey-server": "--bind",
}
PORT_FLAG = "--port"
# 3. Environment variables holding a container port the program listens on.
PORT_VARIABLES = ("APP_METRICS_PORT",)
# ``python``, ``python3``, ``python3.12``: an interpreter, whose program is its ``-m`` module.
PYTHON_NAME = re.compile(r"python(\d+(\.\d+)?)?")


class LoopbackError(RuntimeError):
    """A rendered value this module does not know how to run on loopback."""


def executable(name: str) -> str:
    """1. The local binary for a container's ``command[0]``."""
    if "/" in name:
        return name
    venv = VENV_BIN / name
    if venv.exists():
        return str(venv)
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        raise LoopbackError(f"{name} is not installed here (neither in {VENV_BIN} nor on PATH)")
    return found


def _set_flag(args: list[str], flag: str, value: str, append: bool) -> list[str]:
    """Replace ``flag VALUE`` or ``flag=VALUE``; append the flag when absent and asked to."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
        if arg.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    if append:
        out += [flag, value]
    return out


def split_program(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the words that name the program, its own arguments): ``python -m gatehouse`` is
    three words, ``redis-server`` one, and ``sh -c SCRIPT redis-server`` (a script that
    ends in ``exec "$0" ... "$@"``, as the chart's Redis) four, named by the last."""
    if PYTHON_NAME.fullmatch(Path(argv[0]).name) and len(argv) >= 3 and argv[1] == "-m":
        return list(argv[:3]), list(argv[3:])
    if Path(argv[0]).name == "sh" and len(argv) >= 4 and argv[1] == "-c":
        return list(argv[:4]), list(argv[4:])
    return list(argv[:1]), list(argv[1:])


def program_name(argv: Sequence[str]) -> str:
    """The program a command line runs: ``gatehouse`` for ``python -m gatehouse``, else
    the executable's own name (``redis-server`` for ``/usr/bin/redis-server``)."""
    words, _ = split_program(argv)
    return Path(words[-1]).name


def listen_args(argv: Sequence[str], ip: str, ports: Mapping[int, int]) -> list[str]:
    """2 and 3. The program's own arguments (after the words naming it) with the pod's
    address and the local port for the container port given."""
    name = program_name(argv)
    flag = LISTEN_ADDRESS_FLAGS.get(name)
    if flag is None:
        raise LoopbackError(f"do not know how {name} chooses its listen address")
    _, args = split_program(argv)
    out = _set_flag(args, flag, ip, append=True)
    for i, arg in enumerate(out):
        if arg == PORT_FLAG and i + 1 < len(out) and out[i + 1].isdigit():
            out[i + 1] = str(ports[int(out[i + 1])])
        elif arg.startswith(PORT_FLAG + "=") and arg.split("=", 1)[1].isdigit():
            out[i] = f"{PORT_FLAG}={ports[int(arg.split('=', 1)[1])]}"
    return out


def listen_env(env: Mapping[str, str], ports: Mapping[int, int]) -> dict[str, str]:
    """3. The local port for each container port a ``PORT_VARIABLES`` variable names."""
    return {
        name: str(ports[int(value)]) if name in PORT_VARIABLES and value.isdigit() else value
        for name, value in env.items()
    }


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a pod may use for a Service of its own namespace."""
    return (service, f"{service}.{namespace}", f"{service}.{namespace}.svc")


def resolve_services(value: str, services: Mapping[tuple[str, int], tuple[str, int]]) -> str:
    """4. ``scheme://name:port`` -> ``scheme://127.x:port`` for a known Service name and port.

    ``services`` maps (DNS name, Service port) to the endpoint's local (address, port).
    ``<svc>.<ns>.svc.<cluster domain>`` matches through its ``<svc>.<ns>.svc`` part.
    """
    if "://" not in value:
        return value
    parts = urlsplit(value)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    changed = []
    for hostport in hosts.split(","):
        host, _, port = hostport.rpartition(":")
        key = host.split(".svc.", 1)[0] + ".svc" if ".svc." in host else host
        if port.isdigit() and (key, int(port)) in services:
            local_ip, local_port = services[(key, int(port))]
            hostport = f"{local_ip}:{local_port}"
        changed.append(hostport)
    netloc = (userinfo + "@" if userinfo else "") + ",".join(changed)
    return parts._replace(netloc=netloc).geturl()


def resolve_mounts(value: str, mounts: Mapping[str, Path]) -> str:
    """5. A path under a volume's mountPath -> the same path under its local directory."""
    for mount_path, local in mounts.items():
        root = mount_path.rstrip("/")
        if value == root or value.startswith(root + "/"):
            return str(local) + value[len(root) :]
    return value


def process_env(container_env: Mapping[str, str], home: Path) -> dict[str, str]:
    """6. The process environment: the container's variables over a bare base."""
    base = {"PATH": f"{VENV_BIN}:{SYSTEM_PATH}", "HOME": str(home), "LANG": "C.UTF-8"}
    return {**base, **container_env}


def localise(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    ip: str,
    ports: Mapping[int, int],
    services: Mapping[tuple[str, int], tuple[str, int]],
    mounts: Mapping[str, Path],
    home: Path,
) -> tuple[list[str], dict[str, str]]:
    """The rendered, kubelet-expanded command line and environment, made runnable here."""
    if not argv:
        raise LoopbackError("the container has no command (the image's entrypoint is unknown here)")
    words, _ = split_program(argv)
    program = [executable(words[0]), *words[1:]]
    args = listen_args(argv, ip, ports)
    args = [resolve_mounts(resolve_services(arg, services), mounts) for arg in args]
    local_env = {
        name: resolve_mounts(resolve_services(value, services), mounts)
        for name, value in listen_env(env, ports).items()
    }
    return [*program, *args], process_env(local_env, home)


def localise_in_container(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    ip: str,
    ports: Mapping[int, int],
    services: Mapping[tuple[str, int], tuple[str, int]],
) -> tuple[list[str], dict[str, str]]:
    """The same for a container on the host network: listen address, ports and Service
    names only (``command[0]``, ``python`` for the API, is found on the image's PATH;
    mounts are at their paths)."""
    if not argv:
        raise LoopbackError("the container has no command (the image's entrypoint is unknown here)")
    program, _ = split_program(argv)
    args = [resolve_services(arg, services) for arg in listen_args(argv, ip, ports)]
    local_env = {
        name: resolve_services(value, services) for name, value in listen_env(env, ports).items()
    }
    return [*program, *args], local_env
