"""The API container as the chart runs it, read from ``scripts/helm template``.

The image layer must run the image the way Kubernetes will: the rendered Deployment's
command, args and environment (its ConfigMap included, and the mounted origins file),
its user and group, its grace period. Only where a pod differs from a loopback
container is anything replaced: the listen address and port, and the Redis URL (the
in-cluster Service name cannot resolve here).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

import yaml

from tests.helpers import ROOT

CHART = "charts/gatehouse"
VALUES = "k8s/values-local.yaml"
RELEASE = "t"


@dataclass
class ChartPod:
    command: list[str]
    args: list[str]
    env: dict[str, str]
    files: dict[str, dict[str, str]]  # mount path -> {file name: content}
    run_as_user: int
    run_as_group: int
    fs_group: int | None
    read_only_root: bool
    drop_capabilities: list[str]
    allow_privilege_escalation: bool
    termination_grace_seconds: int
    pre_stop_sleep_seconds: int
    graceful_shutdown_seconds: int
    memory_limit: str | None  # docker's --memory syntax
    cpu_limit: str | None  # docker's --cpus syntax
    source: str  # where this came from, for the report
    notes: list[str] = field(default_factory=list)

    def argv_for(self, host: str, port: int) -> list[str]:
        """The rendered command and args, listening on ``host:port`` instead."""
        args = list(self.args)
        for flag, value in (("--host", host), ("--port", str(port))):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        return [*self.command, *args]


def _docker_memory(quantity: str | None) -> str | None:
    """Kubernetes memory quantity -> docker --memory (binary suffixes only)."""
    if not quantity:
        return None
    for suffix, unit in (("Ki", "k"), ("Mi", "m"), ("Gi", "g")):
        if quantity.endswith(suffix):
            return quantity[: -len(suffix)] + unit
    return quantity if quantity.isdigit() else None


def _docker_cpus(quantity: str | None) -> str | None:
    if not quantity:
        return None
    if quantity.endswith("m"):
        return str(int(quantity[:-1]) / 1000)
    return quantity


def render() -> list[dict]:
    result = subprocess.run(
        [str(ROOT / "scripts/helm"), "template", RELEASE, CHART, "-f", VALUES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr else "failed")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def from_chart(documents: list[dict]) -> ChartPod:
    """The API container of the rendered Deployment (component ``api``)."""
    deployment = next(
        doc
        for doc in documents
        if doc["kind"] == "Deployment"
        and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    )
    config_maps = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "ConfigMap"}
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "api")
    notes: list[str] = []

    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            env.update({k: str(v) for k, v in config_maps[ref["name"]].get("data", {}).items()})
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:  # Secrets (the Redis URL and password) are the test's to supply
            env.pop(entry["name"], None)
            notes.append(f"{entry['name']}: from a Secret in the chart; left to the test")

    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    files: dict[str, dict[str, str]] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            data = config_maps[volume["configMap"]["name"]].get("data", {})
            files[mount["mountPath"]] = {k: str(v) for k, v in data.items()}

    pod_security = pod.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    limits = container.get("resources", {}).get("limits", {})
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    args = [str(arg) for arg in container.get("args", [])]
    return ChartPod(
        command=[str(part) for part in container.get("command", [])],
        args=args,
        env=env,
        files=files,
        run_as_user=int(security["runAsUser"]),
        run_as_group=int(security["runAsGroup"]),
        fs_group=pod_security.get("fsGroup"),
        read_only_root=bool(security.get("readOnlyRootFilesystem")),
        drop_capabilities=list(security.get("capabilities", {}).get("drop", [])),
        allow_privilege_escalation=bool(security.get("allowPrivilegeEscalation", True)),
        termination_grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
        pre_stop_sleep_seconds=int(pre_stop[-1]) if pre_stop[:1] == ["/bin/sleep"] else 0,
        graceful_shutdown_seconds=int(env.get("APP_GRACEFUL_SHUTDOWN_SECONDS") or 0),
        memory_limit=_docker_memory(str(limits["memory"]) if "memory" in limits else None),
        cpu_limit=_docker_cpus(str(limits["cpu"]) if "cpu" in limits else None),
        source=f"scripts/helm template {RELEASE} {CHART} -f {VALUES}",
        notes=notes,
    )


# FALLBACK, used only when the chart does not render: the chart's Deployment for
# k8s/values-local.yaml (`python -m gatehouse`, proxy trust and the drain in the
# environment, uid/gid 10001, read-only root, no capabilities, 30 s grace with a 5 s
# preStop sleep and a 20 s drain). The report says when it is used.
FALLBACK = ChartPod(
    command=["python", "-m", "gatehouse"],
    args=["--host", "0.0.0.0", "--port", "8000"],
    env={
        "APP_ENVIRONMENT": "local",
        "APP_ALLOWED_ORIGINS": "http://app-a.localtest:5173",
        "APP_TRUSTED_HOSTS": "api-a.localtest",
        "APP_LOG_LEVEL": "info",
        "FORWARDED_ALLOW_IPS": "127.0.10.0/24",
        "APP_GRACEFUL_SHUTDOWN_SECONDS": "20",
    },
    files={},
    run_as_user=10001,
    run_as_group=10001,
    fs_group=10001,
    read_only_root=True,
    drop_capabilities=["ALL"],
    allow_privilege_escalation=False,
    termination_grace_seconds=30,
    pre_stop_sleep_seconds=5,
    graceful_shutdown_seconds=20,
    memory_limit="256m",
    cpu_limit="1",
    source="FALLBACK (the chart did not render)",
)


def load() -> ChartPod:
    try:
        return from_chart(render())
    except Exception as error:  # the chart layer reports the chart's own failure
        pod = FALLBACK
        pod.notes.append(f"chart did not render ({error}); using the fallback pod spec")
        return pod
