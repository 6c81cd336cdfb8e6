"""Child processes that always stop: each in its own process group, logs to a file.

The one process manager of the project: the stack harness's pods and nginx, the test
layers' Redis, Sentinel and Gatehouse servers and the benchmark's servers all run as a
``Process``. Every process starts in a new session, so its group holds it and anything
it forks (nginx's workers); stopping signals the whole group, then kills what is left.
Probes are the kubelet's: an HTTP GET answered 200-399, or a TCP connect.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


class StartError(RuntimeError):
    """A process exited or never became ready; the message carries its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at ``host`` right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """The kubelet's httpGet probe: any status from 200 to 399 is a success."""
    # The kubelet sends Host = the pod IP, which is why the service exempts probe paths.
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as response:
            return 200 <= int(response.status) < 400
    except urllib.error.HTTPError as error:
        return 200 <= error.code < 400
    except OSError:
        return False


def tcp_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_popen(popen: subprocess.Popen[Any], grace: float = 10.0, *, group: bool) -> None:
    """SIGTERM, up to ``grace`` seconds for it to exit, then SIGKILL.

    With ``group`` (a child started in its own session) both signals go to its whole
    process group, and the SIGKILL goes even after the leader exited: nothing it forked
    may outlive it. Without, to the child alone (one in the caller's own group).
    """

    def send(signum: int) -> None:
        if group:
            _signal_group(popen.pid, signum)
        elif popen.poll() is None:
            popen.send_signal(signum)

    if popen.poll() is None:
        send(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(grace)
    send(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(5)


class Process:
    """One local stand-in for a container (or for nginx, Redis, a test's server).

    ``env`` None inherits this process's environment; the log is appended to, so a
    restarted process keeps its predecessor's lines.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | None = None,
        log_path: Path,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - argv from the caller, no shell
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its children
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        """The whole log ("" before there is one)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_until(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """Poll ``ready`` until it holds; fail early if the process exits meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                code = self.popen.returncode if self.popen else None
                raise StartError(f"{self.name} exited ({code}) before {what}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(interval)
        raise StartError(f"{self.name}: no {what} after {timeout:.0f} s:\n{self.log_tail()}")

    def launch(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
    ) -> None:
        """``start``, then ``wait_until`` ready; one that never gets there is stopped first."""
        self.start()
        try:
            self.wait_until(ready, timeout, what, interval)
        except BaseException:
            self.stop(grace=5)
            raise

    def send(self, signum: int) -> None:
        """A signal to the leader only (nginx's master: SIGHUP = reload)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        if self.popen is not None:
            _signal_group(self.popen.pid, signum)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the group, SIGKILL to the group after ``grace`` seconds."""
        if self.popen is not None:
            # Whatever the leader did, nothing of its group may outlive it (nginx workers).
            stop_popen(self.popen, grace, group=True)

    def kill(self) -> None:
        """SIGKILL the whole group at once, like a node losing the container."""
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)


def group_members(pgids: set[int]) -> list[int]:
    """Live processes (not zombies) whose process group is one of ``pgids``, from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in pgids:
            members.append(int(entry.name))
    return members
