"""One API container on the host network, bound to a loopback address, always removed."""

from __future__ import annotations

import itertools
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.helpers import free_port

from .chartpod import ChartPod

# One loopback address per container (127.0.0.0/8 is all loopback on Linux), so a
# container that outlives its test never answers on another test's address.
_ADDRESSES = (f"127.0.0.{n}" for n in itertools.cycle(range(40, 250)))


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


class Container:
    """``docker run`` of ``image`` with the pod's command, args, env, files and limits.

    Restricted like the pod: read-only root, /tmp a size-capped tmpfs, every capability
    dropped, no privilege escalation, the given ``user`` ("uid:gid").
    """

    def __init__(
        self,
        image: str,
        pod: ChartPod,
        user: str,
        config_dir: Path,
        env: dict[str, str | None] | None = None,
    ) -> None:
        self.image = image
        self.pod = pod
        self.user = user
        self.host = next(_ADDRESSES)
        self.port = free_port(self.host)
        self.name = f"gatehouse-image-test-{uuid.uuid4().hex[:10]}"
        # ``None`` removes a variable the pod spec sets.
        merged = {**pod.env, **(env or {})}
        self.env = {key: value for key, value in merged.items() if value is not None}
        # The chart's management port (probes, metrics) moves to a free one of this address
        # too: every container shares the host's network.
        self.metrics_port: int | None = None
        if "APP_METRICS_PORT" in self.env:
            self.metrics_port = free_port(self.host)
            self.env["APP_METRICS_PORT"] = str(self.metrics_port)
        self.config_dir = config_dir
        self.started_at: float | None = None
        self.ready_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def management_url(self) -> str:
        """Where /healthz, /readyz and /metrics are: the management port when the pod has one."""
        return f"http://{self.host}:{self.metrics_port or self.port}"

    def run_args(self) -> list[str]:
        argv = self.pod.argv_for(self.host, self.port)
        options = [
            "run", "--detach", "--name", self.name, "--network", "host",
            "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m,mode=1777",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--user", self.user,
        ]  # fmt: skip
        if self.pod.fs_group is not None and not self.user.endswith(":0"):
            options += ["--group-add", str(self.pod.fs_group)]
        if self.pod.memory_limit:
            options += ["--memory", self.pod.memory_limit]
        if self.pod.cpu_limit:
            options += ["--cpus", self.pod.cpu_limit]
        for mount_path, files in self.pod.files.items():
            target = self.config_dir / mount_path.strip("/").replace("/", "_")
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
            for name, content in files.items():
                (target / name).write_text(content)
                (target / name).chmod(0o644)
            options += ["--volume", f"{target}:{mount_path}:ro"]
        for key, value in sorted(self.env.items()):
            options += ["--env", f"{key}={value}"]
        options += ["--entrypoint", argv[0], self.image, *argv[1:]]
        return options

    def start(self, timeout: float = 30) -> None:
        """Run it and wait until /readyz answers 200; ``ready_seconds`` says how long."""
        self.config_dir.chmod(0o755)
        self.started_at = time.monotonic()
        docker(*self.run_args())
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.management_url}/readyz", timeout=1).status_code == 200:
                    self.ready_seconds = time.monotonic() - self.started_at
                    return
            except httpx.HTTPError:
                pass
            if not self.running():
                raise RuntimeError(f"container exited before it was ready:\n{self.logs()}")
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.management_url}/readyz not 200 after {timeout} s:\n{self.logs()}"
        )

    def running(self) -> bool:
        result = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def exit_code(self) -> int:
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-6000:]

    def signal(self, name: str) -> None:
        docker("kill", "--signal", name, self.name)

    def wait(self, timeout: float) -> float:
        """Seconds until the container exits; TimeoutError after ``timeout``."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"container still running {timeout} s later:\n{self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)
