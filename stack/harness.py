"""The rendered chart for one or more environments, run as local processes.

``Stack`` renders each environment with ``scripts/helm template``, places every pod of
every Deployment on its own loopback address, starts the containers the way the
kubelet would (``stack.kubelet``) with the loopback overrides (``stack.loopback``),
waits on the rendered probes, and puts nginx in front as the ingress controller
(``stack.nginx``), routing by the rendered Ingress/HTTPRoute objects.

Addresses model the network:

    127.0.10.1            the ingress controller (inside the trusted ingress CIDR)
    127.0.2<i>.<n>        API pods of environment i (127.0.20.x for the first, 127.0.21.x ...)
    127.0.30.<10*i + n>   Redis pods (127.0.30.1 for the first environment, 127.0.30.11 ...)
    127.0.50.x            clients (outside every trusted CIDR; chosen by the caller)

Runtimes: ``process`` (the default) runs every container as a local process;
``container`` runs the API pods as containers of the built image on the host network,
with the rendered security context (``stack.containers``). Redis and nginx are local
processes either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import containers, kubelet, loopback
from .containers import ContainerProcess
from .nginx import ControllerConfig, Location, Nginx, Upstream
from .processes import Process, StartError, free_port, http_ok, tcp_ok
from .render import ROOT, Container, Deployment, Manifest, Probe, render

K8S = ROOT / "k8s"
RELEASE = "gatehouse"
INGRESS_IP = "127.0.10.1"
RUNTIMES = ("process", "container")
_STACKS = itertools.count(1)  # numbers the stacks of this process, for container names


@dataclass(frozen=True)
class EnvironmentSpec:
    """One namespace: a release of the chart with an environment's values."""

    name: str
    namespace: str
    values_files: tuple[Path, ...]
    release: str = RELEASE
    sets: tuple[str, ...] = ()

    def with_sets(self, *sets: str) -> EnvironmentSpec:
        return dataclasses.replace(self, sets=(*self.sets, *sets))


# In a cluster the chart's hook Job creates a random Redis password once (the render holds
# none); no Kubernetes API runs that Job here, so each run picks one and renders it instead.
_REDIS_PASSWORD = (f"redis.auth.password={secrets.token_urlsafe(32)}",)
# The namespaces match the chart tests' (tests/chart/conftest.py).
ENVIRONMENTS = {
    "local": EnvironmentSpec(
        "local", "gatehouse-local-a", (K8S / "values-local.yaml",), sets=_REDIS_PASSWORD
    ),
    "local-b": EnvironmentSpec(
        "local-b", "gatehouse-local-b", (K8S / "values-local-b.yaml",), sets=_REDIS_PASSWORD
    ),
}


def _network(component: str, env_index: int) -> tuple[str, int]:
    """(the /24 a component's pods live in, the first host number) for an environment."""
    if component == "redis":
        return "127.0.30", 10 * env_index + 1
    return f"127.0.{20 + env_index}", 1


@dataclass
class Pod:
    """One pod on loopback: an address, its ports, its volumes and its containers."""

    name: str
    env: str  # the EnvironmentSpec's name
    ip: str
    deployment: Deployment
    root: Path
    ports: dict[int, int]  # containerPort -> local port
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath -> local dir
    processes: list[Process] = field(default_factory=list)  # ContainerProcess in containers
    ready: bool = False

    def port(self, name_or_number: int | str) -> int:
        """The local port for a container port given by name or number."""
        for container in self.deployment.containers:
            with contextlib.suppress(Exception):
                return self.ports[container.port_number(name_or_number)]
        raise KeyError(name_or_number)

    def running(self) -> bool:
        return all(process.running() for process in self.processes)


@dataclass
class Environment:
    spec: EnvironmentSpec
    index: int
    manifest: Manifest
    root: Path
    pods: dict[str, list[Pod]] = field(default_factory=dict)  # Deployment name -> pods
    # Every ConfigMap/Secret volume of a running pod, with the Volume it came from.
    volumes: list[tuple[kubelet.ProjectedVolume, dict[str, Any]]] = field(default_factory=list)
    counters: dict[str, Iterator[int]] = field(default_factory=dict)

    def hosts(self) -> list[str]:
        return [route.host for route in self.manifest.routes if route.host]


class Stack:
    """Environments rendered from the chart and run on loopback, behind one nginx."""

    def __init__(
        self,
        specs: Sequence[EnvironmentSpec],
        *,
        ingress_ip: str = INGRESS_IP,
        ingress_port: int | None = None,
        root: Path | None = None,
        controller: ControllerConfig | None = None,
        runtime: str = "process",
        image: str | None = None,
    ) -> None:
        if not specs:
            raise ValueError("give at least one environment")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.image = image or os.environ.get("IMAGE") or containers.DEFAULT_IMAGE
        self.name = f"gatehouse-stack-{os.getpid()}-{next(_STACKS)}"
        self.specs = list(specs)
        self.ingress_ip = ingress_ip
        self.ingress_port = ingress_port
        self.controller = controller or ControllerConfig.load()
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="gatehouse-stack-"))
        # Every container of this stack carries it: what teardown (and the tests) look for.
        self.label = str(self.root)
        self.envs: dict[str, Environment] = {}
        self.nginx: Nginx | None = None

    # -- lifecycle -------------------------------------------------------------------

    def up(self) -> Stack:
        """Render, start everything, wait for readiness. On any failure, tear down first."""
        try:
            if self.runtime == "container":
                containers.ensure_image(self.image)
            for index, spec in enumerate(self.specs):
                manifest = render(spec.release, spec.namespace, spec.values_files, spec.sets)
                env = Environment(spec, index, manifest, self.root / spec.name)
                self.envs[spec.name] = env
            # Pods are placed before any starts: a Service name resolves to an address
            # known up front, as a ClusterIP is, whatever the start order.
            for env in self.envs.values():
                for deployment in env.manifest.deployments:
                    env.pods[deployment.name] = [
                        self._place(env, deployment) for _ in range(deployment.replicas)
                    ]
            # Redis first (the API's readiness may depend on it), then every API pod at once.
            for component_first in (True, False):
                batch = [
                    pod
                    for env in self.envs.values()
                    for pods in env.pods.values()
                    for pod in pods
                    if (pod.deployment.component == "redis") == component_first
                ]
                for pod in batch:
                    self._start(self.envs[pod.env], pod)
                for pod in batch:
                    self._wait_ready(pod)
            self.nginx = Nginx(self.root / "ingress", self.ingress_ip, self.ingress_port)
            self.nginx.start(self._servers(), self.controller)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop nginx, then every pod; remove the temporary directory. Safe to call twice."""
        if self.nginx is not None:
            self.nginx.stop()
        for env in self.envs.values():
            for pods in env.pods.values():
                for pod in pods:
                    self._stop_pod(pod)
        if self.runtime == "container":  # anything created but never tracked (a failed start)
            containers.remove_labelled(self.label)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- what callers (tests, the CLI) need ------------------------------------------

    @property
    def ingress_url(self) -> str:
        assert self.nginx is not None, "the stack is not up"
        return f"http://{self.nginx.host}:{self.nginx.port}"

    def host(self, env: str) -> str:
        """The first host name the environment's Ingress/HTTPRoute routes."""
        hosts = self.envs[env].hosts()
        if not hosts:
            raise LookupError(f"{env}: the render has no Ingress or HTTPRoute host")
        return hosts[0]

    def config(self, env: str) -> dict[str, str]:
        """The API's ConfigMap data, as rendered."""
        deployment = self.envs[env].manifest.deployment("api")
        return kubelet.resolve_env(deployment.containers[0], self.envs[env].manifest, {})

    def pods(self, env: str, component: str = "api") -> list[Pod]:
        manifest = self.envs[env].manifest
        return list(self.envs[env].pods[manifest.deployment(component).name])

    def redis_address(self, env: str) -> tuple[str, int, str | None]:
        """(address, port, password) of the environment's Redis pod."""
        pod = self.pods(env, "redis")[0]
        env_vars = self.config(env)
        return pod.ip, pod.port("redis"), env_vars.get("APP_REDIS_PASSWORD")

    def redis_client(self, env: str) -> Any:
        import redis

        ip, port, password = self.redis_address(env)
        return redis.Redis(host=ip, port=port, password=password, socket_timeout=2)

    def process_groups(self) -> set[int]:
        """Every process group the stack started (one per container, one for nginx)."""
        pgids = {
            process.pid
            for env in self.envs.values()
            for pods in env.pods.values()
            for pod in pods
            for process in pod.processes
            if process.pid is not None
        }
        if self.nginx is not None and self.nginx.process.pid is not None:
            pgids.add(self.nginx.process.pid)
        return pgids

    def containers(self, *, running_only: bool = False) -> list[str]:
        """Names of the engine's containers labelled as this stack's (any state by
        default); always empty for the process runtime."""
        if self.runtime != "container":
            return []
        return containers.labelled(self.label, running_only=running_only)

    def kill_pod(self, pod: Pod) -> None:
        """SIGKILL every container of a pod (its endpoint stays in nginx, as until the
        endpoints controller notices); the ingress must route around it. A container of
        the container runtime gets ``docker kill``."""
        for process in pod.processes:
            process.kill()

    def restart_containers(self, pod: Pod) -> None:
        """Stop and start a pod's containers in place (same address and ports), as the
        kubelet restarts a crashed container, then wait on its probes."""
        env = self.envs[pod.env]
        for process in pod.processes:
            process.stop(grace=self._grace(pod.deployment))
        pod.processes = []
        self._start(env, pod)
        self._wait_ready(pod)

    def rollout(self, env_name: str, *sets: str) -> EnvironmentSpec:
        """``helm upgrade`` with extra ``--set`` values, as the cluster would apply it.

        Re-renders; Secrets already running keep their data (as a cluster keeps the
        Secret the chart's password Job made, which no render holds);
        ConfigMap volumes of running pods are rewritten in place (the kubelet syncs
        them); a Deployment whose pod template changed is replaced pod by pod: a new
        pod starts, becomes ready and joins the endpoints, then an old one leaves them
        and stops (maxSurge 1, maxUnavailable 0: what 25%/25% gives for 3 replicas).

        Known difference: ingress-nginx applies endpoint changes without a reload (its
        Lua balancer); open-source nginx must reload, and its old workers close idle
        keep-alive client connections, so a client reusing one at that instant sees a
        reset (which HTTP clients may retry for idempotent requests, RFC 9110 9.2.2).
        """
        env = self.envs[env_name]
        spec = env.spec.with_sets(*sets)
        fresh = render(spec.release, spec.namespace, spec.values_files, spec.sets)
        secrets = {
            name: {**data, **env.manifest.secrets.get(name, {})}
            for name, data in fresh.secrets.items()
        }
        fresh = dataclasses.replace(fresh, secrets=secrets)
        old_manifest, env.manifest, env.spec = env.manifest, fresh, spec
        for volume, source in env.volumes:
            if volume.path.exists():
                volume.write(kubelet.volume_files(source, fresh) or {})

        for deployment in fresh.deployments:
            previous = next(
                (d for d in old_manifest.deployments if d.name == deployment.name), None
            )
            if (
                previous is not None
                and previous.pod_template == deployment.pod_template
                and previous.replicas == deployment.replicas
            ):
                continue
            old_pods = env.pods.get(deployment.name, [])
            new_pods: list[Pod] = []
            env.pods[deployment.name] = new_pods
            for step in range(max(len(old_pods), deployment.replicas)):
                if step < deployment.replicas:
                    pod = self._place(env, deployment)
                    new_pods.append(pod)
                    try:
                        self._start(env, pod)
                        self._wait_ready(pod)
                    finally:
                        env.pods[deployment.name] = [*old_pods[step:], *new_pods]
                retiring = old_pods[step] if step < len(old_pods) else None
                if retiring is not None:
                    retiring.ready = False
                    env.pods[deployment.name] = [*old_pods[step + 1 :], *new_pods]
                # One reload per step: the new endpoint in and the old one out together.
                self._reload()
                if retiring is not None:
                    self._stop_pod(retiring)
            env.pods[deployment.name] = new_pods
        return spec

    def summary(self) -> list[str]:
        """Lines describing what runs where, for the CLI."""
        lines = [f"ingress (nginx): {self.ingress_url}  logs {self.root / 'ingress' / 'logs'}"]
        for env in self.envs.values():
            lines.append(
                f"{env.spec.name}: namespace {env.spec.namespace}, release {env.spec.release}"
            )
            for host in env.hosts():
                lines.append(
                    f"  http://{host}:{self.nginx.port if self.nginx else '?'}  (Host {host} via {self.ingress_url})"
                )
            for pods in env.pods.values():
                for pod in pods:
                    # By port name: the probes and /metrics are on `metrics`, not `http`.
                    where = ", ".join(
                        f"{name} {pod.ip}:{pod.ports[number]}"
                        for container in pod.deployment.containers
                        for name, number in container.ports.items()
                    )
                    line = f"  {pod.name:<20} {where:<48} logs {pod.root}"
                    names = [p.container for p in pod.processes if isinstance(p, ContainerProcess)]
                    lines.append(line + (f"  container {', '.join(names)}" if names else ""))
        return lines

    # -- internals -------------------------------------------------------------------

    def _place(self, env: Environment, deployment: Deployment) -> Pod:
        """An address and free ports for a new pod of ``deployment`` (not started yet)."""
        network, first = _network(deployment.component, env.index)
        counter = env.counters.setdefault(deployment.name, itertools.count(first))
        number = next(counter)
        ip = f"{network}.{number}"
        name = f"{deployment.name}-{number}"
        ports = {
            container_port: free_port(ip)
            for container in deployment.containers
            for container_port in container.ports.values()
        }
        return Pod(name, env.spec.name, ip, deployment, root=env.root / name, ports=ports)

    def _service_endpoints(self, env: Environment) -> dict[tuple[str, int], tuple[str, int]]:
        """(Service DNS name, Service port) -> the first pod's local (address, port)."""
        endpoints: dict[tuple[str, int], tuple[str, int]] = {}
        for service in env.manifest.services.values():
            for deployment in env.manifest.deployments:
                pods = env.pods.get(deployment.name) or []
                if not service.selects(deployment.pod_labels) or not pods:
                    continue
                for port, target in service.ports.values():
                    local = (pods[0].ip, pods[0].port(target))
                    for name in loopback.service_names(service.name, env.spec.namespace):
                        endpoints[(name, port)] = local
        return endpoints

    def _volume(self, env: Environment, pod: Pod, volume: dict[str, Any]) -> Path:
        """The pod's local directory for a volume, filled as the kubelet would."""
        path: Path = pod.root / "volumes" / str(volume["name"])
        files = kubelet.volume_files(volume, env.manifest)
        if files is None:
            path.mkdir(parents=True, exist_ok=True)  # an emptyDir
            return path
        projected = kubelet.ProjectedVolume(path)
        projected.write(files)
        env.volumes.append((projected, volume))
        return path

    def _start(self, env: Environment, pod: Pod) -> None:
        pod.root.mkdir(parents=True, exist_ok=True)
        spec = pod.deployment
        mounts_by_volume = {
            name: self._volume(env, pod, volume) for name, volume in spec.volumes.items()
        }
        pod_fields = {
            "metadata.name": pod.name,
            "metadata.namespace": env.spec.namespace,
            "status.podIP": pod.ip,
            "spec.nodeName": "localhost",
        }
        services = self._service_endpoints(env)
        for container in spec.containers:
            pod.mounts = {m.mount_path: mounts_by_volume[m.name] for m in container.volume_mounts}
            container_env = kubelet.resolve_env(container, env.manifest, pod_fields)
            argv = kubelet.expand_all([*container.command, *container.args], container_env)
            if self._in_container(pod):
                process: Process = self._container(
                    env, pod, container, argv, container_env, services, mounts_by_volume
                )
                pod.processes.append(process)
                process.start()
                continue
            argv, process_env = loopback.localise(
                argv,
                container_env,
                ip=pod.ip,
                ports=pod.ports,
                services=services,
                mounts=pod.mounts,
                home=pod.root,
            )
            process = Process(
                f"{env.spec.namespace}/{pod.name}/{container.name}",
                argv,
                process_env,
                cwd=pod.root,
                log_path=pod.root / f"{container.name}.log",
            )
            pod.processes.append(process)
            process.start()

    def _in_container(self, pod: Pod) -> bool:
        return self.runtime == "container" and pod.deployment.component in containers.COMPONENTS

    def _container(
        self,
        env: Environment,
        pod: Pod,
        container: Container,
        argv: list[str],
        container_env: dict[str, str],
        services: dict[tuple[str, int], tuple[str, int]],
        local_dirs: dict[str, Path],
    ) -> ContainerProcess:
        """The rendered container as a ``docker create`` of the image (not started yet)."""
        argv, variables = loopback.localise_in_container(
            argv, container_env, ip=pod.ip, ports=pod.ports, services=services
        )
        pod_spec = pod.deployment.pod_template["spec"]
        raw = next(c for c in pod_spec["containers"] if c["name"] == container.name)
        name = f"{self.name}-{env.spec.namespace}-{pod.name}-{container.name}"
        create = containers.create_args(
            name=name,
            labels={
                containers.LABEL: self.label,
                f"{containers.LABEL}.pod": f"{env.spec.namespace}/{pod.name}",
            },
            image=self.image,
            pod_spec=pod_spec,
            container=raw,
            local_dirs=local_dirs,
            env_names=sorted(variables),
            argv=argv,
        )
        return ContainerProcess(
            f"{env.spec.namespace}/{pod.name}/{container.name}",
            name,
            create,
            variables,
            cwd=pod.root,
            log_path=pod.root / f"{container.name}.log",
        )

    def _wait_ready(self, pod: Pod) -> None:
        """The startup probe, then the readiness probe, each within its rendered budget."""
        for container, process in zip(pod.deployment.containers, pod.processes, strict=True):
            for kind, probe in (
                ("startup", container.startup_probe),
                ("readiness", container.readiness_probe),
            ):
                if probe is not None:
                    process.wait_until(
                        self._prober(pod, container, probe),
                        timeout=probe.budget_seconds,
                        what=f"{kind} probe {probe.kind} {probe.path if probe.kind == 'http' else ''}",
                    )
        pod.ready = True

    @staticmethod
    def _prober(pod: Pod, container: Container, probe: Probe) -> Any:
        port = pod.ports[container.port_number(probe.port)]
        if probe.kind == "http":
            return lambda: http_ok(pod.ip, port, probe.path, timeout=probe.timeout_seconds)
        return lambda: tcp_ok(pod.ip, port, timeout=probe.timeout_seconds)

    @staticmethod
    def _grace(deployment: Deployment) -> float:
        return float(deployment.pod_template["spec"].get("terminationGracePeriodSeconds", 30))

    def _stop_pod(self, pod: Pod) -> None:
        pod.ready = False
        for process in pod.processes:
            process.stop(grace=self._grace(pod.deployment))
        env = self.envs.get(pod.env)
        if env is not None:  # its volumes are gone with it: the kubelet stops syncing them
            env.volumes = [(v, s) for v, s in env.volumes if not v.path.is_relative_to(pod.root)]

    def _servers(self) -> dict[str | None, list[Location]]:
        """Host -> locations, from every environment's routes and its ready pods."""
        servers: dict[str | None, list[Location]] = {}
        for env in self.envs.values():
            manifest = env.manifest
            for route in manifest.routes:
                service = manifest.services.get(route.service)
                if service is None:
                    raise StartError(
                        f"{route.source} routes to Service {route.service}, not rendered"
                    )
                target = service.target_for(route.port)
                endpoints = [
                    (pod.ip, pod.port(target))
                    for deployment in manifest.deployments
                    if service.selects(deployment.pod_labels)
                    for pod in env.pods.get(deployment.name, [])
                    if pod.ready
                ]
                upstream = Upstream(
                    name=f"{env.spec.namespace}-{service.name}-{route.port}".replace(".", "-"),
                    endpoints=tuple(endpoints),
                )
                source = f"{env.spec.namespace}/{route.source}"
                servers.setdefault(route.host, []).append(
                    Location(route.path, route.path_type, upstream, source)
                )
        return servers

    def _reload(self) -> None:
        if self.nginx is not None:
            self.nginx.reload(self._servers(), self.controller)
