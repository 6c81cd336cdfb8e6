"""Shared by the test layers: free ports, real processes that always stop.

Every server a test starts is a ``stack.processes.Process`` (the stack harness's too):
its own process group, a log file, a readiness wait that fails early with the log's
tail when the process exits, SIGTERM to the group then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stack.processes import Process, free_port, http_ok, stop_popen

from tests.jwt_keys import identity_env

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def wait_until(
    predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def wait_for_fresh_window(
    window_seconds: float, needed: float, now: Callable[[], float] = time.time
) -> None:
    """Sleep past the end of the current window if fewer than ``needed`` seconds are left.

    Gatehouse's windows are fixed and aligned to the clock (Redis's TIME, or the wall
    clock in memory, the same clock on this machine): requests straddling a boundary
    are counted in two windows and admit more than the limit, and a key read after
    the boundary is gone. A test that counts exactly starts where it has room.
    """
    left = window_seconds - now() % window_seconds
    if left < needed:
        time.sleep(left + 0.05)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Stop a child a test started itself (in this process's group): SIGTERM, then SIGKILL."""
    stop_popen(process, timeout, group=False)


def compiled_build() -> Path:
    """The mypyc build of the hot path (``make compiled``), built now unless up to date.

    Put it first on PYTHONPATH to run it: its extension modules shadow their sources."""
    script = [sys.executable, str(ROOT / "scripts" / "build-compiled")]
    built = subprocess.run(script, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        raise RuntimeError(f"scripts/build-compiled failed:\n{built.stdout}{built.stderr}")
    printed = subprocess.run([*script, "--print"], capture_output=True, text=True, check=True)
    return Path(printed.stdout.strip())


def temp_dir() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp"))


class Supervised:
    """A server one ``Process`` runs at a time: ``process`` is None while it is stopped."""

    process: Process | None = None
    grace = 10.0  # seconds from SIGTERM to SIGKILL

    def launch(
        self,
        process: Process,
        ready: Callable[[], bool],
        what: str,
        timeout: float = 15.0,
        interval: float = 0.05,
        fresh_log: bool = True,
    ) -> None:
        """Start ``process`` (on a new log unless told) and wait until ``ready``.

        One that never gets ready is stopped, and ``process`` stays None.
        """
        if fresh_log:
            process.log_path.unlink(missing_ok=True)
        process.launch(ready, timeout, what, interval)
        self.process = process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(self.grace)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients, replicas or sentinels."""
        if self.process is not None:
            self.process.kill()
            self.process = None


class RedisServer(Supervised):
    """A real redis-server on a loopback port, no persistence."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.password = password

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, log_dir: Path | None = None) -> None:
        assert self.binary, "redis-server is not installed"
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        log_path = (log_dir or temp_dir()) / f"redis-127.0.0.1-{self.port}.log"
        process = Process(f"redis-server on port {self.port}", args, log_path=log_path)
        self.launch(process, self.ping, "PING answered")

    def client(self):  # a synchronous client for assertions from the test process
        import redis

        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2
        )

    def ping(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False


class ApiServer(Supervised):
    """``python -m gatehouse`` as a real process on a loopback address and free port."""

    def __init__(
        self, env: Mapping[str, str], host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("APP_")},
            "APP_HOST": host,
            "APP_PORT": str(self.port),
            "APP_ACCESS_LOG": "false",
            "APP_TRUSTED_HOSTS": "*",
            # The tests' identity provider: a client with a token it signed has a budget
            # of its own (tests/jwt_keys.py), an invented token counts by the IP.
            **identity_env(),
            **env,
        }
        self.log_path: Path | None = None
        # With a management port the probes are there, as the kubelet's are.
        metrics_port = self.env.get("APP_METRICS_PORT")
        self.probe_port = int(metrics_port) if metrics_port else self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log_dir: Path | None = None) -> None:
        self.log_path = (log_dir or temp_dir()) / f"gatehouse-{self.host}-{self.port}.log"
        command = [PYTHON, "-m", "gatehouse"]
        process = Process(f"gatehouse on {self.url}", command, self.env, log_path=self.log_path)
        self.launch(
            process, lambda: http_ok(self.host, self.probe_port, "/healthz"), "/healthz ready"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


@contextlib.contextmanager
def running(*servers) -> Iterator[None]:
    """Start servers in order and stop them all, in reverse, whatever happens."""
    started = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            server.stop()


def stored_hits(client: Any, key: bytes | str) -> int:
    """What a limiter key in Redis holds, whatever its algorithm: a fixed window's count
    (a string), a sliding log's hits (a list, one entry per unit), the sliding counters'
    two windows together (a hash)."""
    kind = client.type(key)
    if kind == b"list":
        return int(client.llen(key))
    if kind == b"hash":
        return sum(int(count) for count in client.hgetall(key).values())
    if kind == b"string":
        return int(client.get(key) or 0)
    raise AssertionError(f"{key!r} is a {kind!r}: no algorithm's key")
