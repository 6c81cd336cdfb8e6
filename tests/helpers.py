"""Shared by the test layers: free ports, real processes that always stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class RedisServer:
    """A real redis-server on a loopback port, no persistence."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        self.port = port or free_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.binary, "redis-server is not installed"
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.ping, what=f"redis-server on port {self.port}")

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

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


class ApiServer:
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
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log_dir: Path | None = None) -> None:
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_path = log_dir / f"gatehouse-{self.host}-{self.port}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "gatehouse"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gatehouse exited early:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, what=f"gatehouse on {self.url}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


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
