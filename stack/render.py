"""``helm template`` for one environment, read into the few typed objects the stack runs.

Only what a local run needs is kept: Deployments (replicas, pod labels, containers,
volumes), ConfigMaps, Secrets (decoded), Services, and the routes of Ingress and
HTTPRoute objects. Everything else the chart renders (NetworkPolicy, PDB, test pods)
is parsed by helm and then ignored here.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "gatehouse"
HELM = ROOT / "scripts" / "helm"

Doc = dict[str, Any]


class RenderError(RuntimeError):
    """helm failed, or the chart rendered something the stack cannot run."""


@dataclass(frozen=True)
class Probe:
    """An httpGet or tcpSocket probe; ``port`` is a number or a container port name."""

    kind: str  # "http" or "tcp"
    port: int | str
    path: str = "/"
    period_seconds: int = 10
    failure_threshold: int = 3
    timeout_seconds: int = 1

    @property
    def budget_seconds(self) -> float:
        """How long the kubelet keeps trying before it gives up on the container."""
        return float(self.period_seconds * self.failure_threshold)


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str


@dataclass(frozen=True)
class Container:
    name: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[Doc, ...]  # EnvVar objects, resolved by stack.kubelet
    env_from: tuple[Doc, ...]  # EnvFromSource objects
    ports: Mapping[str, int]  # port name -> containerPort
    startup_probe: Probe | None
    readiness_probe: Probe | None
    volume_mounts: tuple[VolumeMount, ...]

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        if port.isdigit():
            return int(port)
        if port not in self.ports:
            raise RenderError(f"container {self.name} has no port named {port!r}")
        return self.ports[port]


@dataclass(frozen=True)
class Deployment:
    name: str
    replicas: int
    pod_labels: Mapping[str, str]
    pod_template: Doc  # kept whole: a changed template is what triggers a rollout
    containers: tuple[Container, ...]
    volumes: Mapping[str, Doc]  # volume name -> Volume object

    @property
    def component(self) -> str:
        return self.pod_labels.get("app.kubernetes.io/component", self.name)


@dataclass(frozen=True)
class Service:
    name: str
    selector: Mapping[str, str]
    ports: Mapping[str, tuple[int, int | str]]  # port name -> (port, targetPort)

    def target_for(self, port: int | str) -> int | str:
        """The targetPort behind a Service port given by name or number."""
        for name, (number, target) in self.ports.items():
            if port in (name, number):
                return target
        raise RenderError(f"service {self.name} has no port {port!r}")

    def selects(self, labels: Mapping[str, str]) -> bool:
        return bool(self.selector) and all(labels.get(k) == v for k, v in self.selector.items())


@dataclass(frozen=True)
class Route:
    """One host + path -> Service port, from an Ingress rule or an HTTPRoute match."""

    host: str | None  # None: any host
    path: str
    path_type: str  # Prefix, Exact or ImplementationSpecific (Ingress names)
    service: str
    port: int | str
    source: str  # "Ingress/<name>" or "HTTPRoute/<name>", for the nginx comments


@dataclass(frozen=True)
class Manifest:
    """The parts of one release's rendered output that a local run needs."""

    release: str
    namespace: str
    deployments: tuple[Deployment, ...]
    services: Mapping[str, Service]
    config_maps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, str]]
    routes: tuple[Route, ...]
    documents: tuple[Doc, ...] = field(repr=False, default=())

    def deployment(self, component: str) -> Deployment:
        for deployment in self.deployments:
            if deployment.component == component:
                return deployment
        raise RenderError(f"no Deployment with component {component!r} in the render")

    def service_for(self, deployment: Deployment) -> Service | None:
        for service in self.services.values():
            if service.selects(deployment.pod_labels):
                return service
        return None


def helm_template(
    release: str,
    namespace: str,
    values_files: Sequence[Path] = (),
    sets: Sequence[str] = (),
    chart: Path = CHART,
) -> str:
    """The chart rendered by ``scripts/helm template``, as YAML text."""
    command = [str(HELM), "template", release, str(chart), "--namespace", namespace]
    for values in values_files:
        command += ["-f", str(values)]
    for assignment in sets:
        command += ["--set", assignment]
    result = subprocess.run(  # noqa: S603 - scripts/helm, no shell
        command, capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RenderError(f"helm template failed: {result.stderr.strip()}")
    return result.stdout


def render(
    release: str, namespace: str, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> Manifest:
    """Render the chart and read the result."""
    return parse(helm_template(release, namespace, values_files, sets), release, namespace)


def parse(text: str, release: str, namespace: str) -> Manifest:
    documents = tuple(doc for doc in yaml.safe_load_all(text) if doc)
    by_kind: dict[str, list[Doc]] = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], []).append(doc)
    services = {svc["metadata"]["name"]: _service(svc) for svc in by_kind.get("Service", [])}
    routes = [route for ing in by_kind.get("Ingress", []) for route in _ingress_routes(ing)]
    routes += [route for hr in by_kind.get("HTTPRoute", []) for route in _httproute_routes(hr)]
    return Manifest(
        release=release,
        namespace=namespace,
        deployments=tuple(_deployment(doc) for doc in by_kind.get("Deployment", [])),
        services=services,
        config_maps={
            cm["metadata"]["name"]: {k: str(v) for k, v in (cm.get("data") or {}).items()}
            for cm in by_kind.get("ConfigMap", [])
        },
        secrets={
            secret["metadata"]["name"]: _secret_data(secret) for secret in by_kind.get("Secret", [])
        },
        routes=tuple(routes),
        documents=documents,
    )


def _secret_data(secret: Doc) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def _probe(raw: Doc | None) -> Probe | None:
    if not raw:
        return None
    if "httpGet" in raw:
        kind, port, path = "http", raw["httpGet"]["port"], raw["httpGet"].get("path", "/")
    elif "tcpSocket" in raw:
        kind, port, path = "tcp", raw["tcpSocket"]["port"], "/"
    else:
        raise RenderError(f"unsupported probe (only httpGet and tcpSocket): {raw}")
    return Probe(
        kind,
        port,
        path,
        period_seconds=int(raw.get("periodSeconds", 10)),
        failure_threshold=int(raw.get("failureThreshold", 3)),
        timeout_seconds=int(raw.get("timeoutSeconds", 1)),
    )


def _container(raw: Doc) -> Container:
    return Container(
        name=raw["name"],
        command=tuple(str(part) for part in raw.get("command") or ()),
        args=tuple(str(part) for part in raw.get("args") or ()),
        env=tuple(raw.get("env") or ()),
        env_from=tuple(raw.get("envFrom") or ()),
        ports={
            port.get("name", str(port["containerPort"])): int(port["containerPort"])
            for port in raw.get("ports") or ()
        },
        startup_probe=_probe(raw.get("startupProbe")),
        readiness_probe=_probe(raw.get("readinessProbe")),
        volume_mounts=tuple(
            VolumeMount(mount["name"], mount["mountPath"])
            for mount in raw.get("volumeMounts") or ()
        ),
    )


def _deployment(doc: Doc) -> Deployment:
    spec = doc["spec"]
    template = spec["template"]
    pod = template["spec"]
    if pod.get("initContainers"):
        raise RenderError(f"Deployment {doc['metadata']['name']}: init containers are not run")
    return Deployment(
        name=doc["metadata"]["name"],
        # Without spec.replicas (autoscaling on) a Deployment starts with one pod.
        replicas=int(spec.get("replicas", 1)),
        pod_labels=dict(template["metadata"].get("labels") or {}),
        pod_template=template,
        containers=tuple(_container(container) for container in pod["containers"]),
        volumes={volume["name"]: volume for volume in pod.get("volumes") or ()},
    )


def _service(doc: Doc) -> Service:
    spec = doc["spec"]
    return Service(
        name=doc["metadata"]["name"],
        selector=dict(spec.get("selector") or {}),
        ports={
            port.get("name", str(port["port"])): (
                int(port["port"]),
                port.get("targetPort", port["port"]),
            )
            for port in spec.get("ports") or ()
        },
    )


def _ingress_routes(doc: Doc) -> list[Route]:
    source = f"Ingress/{doc['metadata']['name']}"
    routes = []
    for rule in doc["spec"].get("rules") or ():
        for path in (rule.get("http") or {}).get("paths") or ():
            backend = path["backend"]["service"]
            port = backend["port"]
            routes.append(
                Route(
                    host=rule.get("host"),
                    path=path.get("path", "/"),
                    path_type=path.get("pathType", "Prefix"),
                    service=backend["name"],
                    port=port.get("name") or int(port["number"]),
                    source=source,
                )
            )
    return routes


def _httproute_routes(doc: Doc) -> list[Route]:
    source = f"HTTPRoute/{doc['metadata']['name']}"
    spec = doc["spec"]
    hosts: list[str | None] = list(spec.get("hostnames") or ()) or [None]
    routes = []
    for rule in spec.get("rules") or ():
        backends: list[Doc] = rule.get("backendRefs") or []
        if len(backends) != 1:
            raise RenderError(f"{source}: only one backendRef per rule is supported")
        backend = backends[0]
        matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        for match in matches:
            path = match.get("path") or {"type": "PathPrefix", "value": "/"}
            path_type = {"PathPrefix": "Prefix", "Exact": "Exact"}.get(
                path.get("type", "PathPrefix")
            )
            if path_type is None:
                raise RenderError(f"{source}: path match type {path['type']} is not supported")
            routes += [
                Route(
                    host,
                    path.get("value", "/"),
                    path_type,
                    backend["name"],
                    int(backend["port"]),
                    source,
                )
                for host in hosts
            ]
    return routes
