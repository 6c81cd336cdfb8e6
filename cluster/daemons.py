"""The cluster's processes: started detached, remembered by pid file, stopped by that file.

A daemon outlives the command that started it (``make cluster`` returns, the cluster
stays). Its pid file records the pid and the binary, so ``down`` signals only a process
that is still the one this started, never a reused pid or someone else's daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.layout import Layout


class DaemonError(RuntimeError):
    """A daemon exited or did not become ready; the message carries its log's tail."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Daemon:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None

    def pidfile(self, layout: Layout) -> Path:
        return layout.pids / f"{self.name}.pid"

    def log(self, layout: Layout) -> Path:
        return layout.logs / f"{self.name}.log"

    def pid(self, layout: Layout) -> int | None:
        """The pid of this daemon as this cluster started it, while it still runs."""
        return recorded_pid(self.pidfile(layout))

    def start(self, layout: Layout) -> int:
        running = self.pid(layout)
        if running:
            return running
        layout.pids.mkdir(parents=True, exist_ok=True)
        log = self.log(layout)
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if self.env is None else self.env)
        with log.open("ab") as sink:
            process = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make cluster`, and its terminal
            )
        exe = os.readlink(f"/proc/{process.pid}/exe") if process.poll() is None else ""
        self.pidfile(layout).write_text(f"{process.pid} {exe}\n")
        return process.pid

    def wait_until(
        self, layout: Layout, ready: Callable[[], bool], timeout: float, what: str
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid(layout) is None:
                raise DaemonError(
                    f"{self.name} exited before {what}; last lines of {self.log(layout)}:\n"
                    f"{log_tail(self.log(layout))}"
                )
            if ready():
                return
            time.sleep(0.25)
        raise DaemonError(
            f"{self.name}: no {what} after {timeout:.0f} s; last lines of {self.log(layout)}:\n"
            f"{log_tail(self.log(layout))}"
        )


def accepts_connections(path: Path) -> bool:
    """Whether a daemon listens on the Unix socket at path. The file alone proves nothing: a
    daemon killed without a stop leaves its socket behind, refusing every connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def recorded_pid(pidfile: Path) -> int | None:
    try:
        pid_text, _, exe = pidfile.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    try:
        current = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    # A reused pid runs another binary; a zombie has no exe link at all.
    if exe and current.removesuffix(" (deleted)") != exe.removesuffix(" (deleted)"):
        return None
    return pid


def stop_pid(pid: int, grace: float) -> bool:
    """SIGTERM, then SIGKILL after ``grace`` seconds; True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_all(layout: Layout, names: Sequence[str], grace: float = 15.0) -> list[str]:
    """Stop the named daemons (in this order) that this cluster started; what was stopped."""
    stopped = []
    for name in names:
        pidfile = layout.pids / f"{name}.pid"
        pid = recorded_pid(pidfile)
        if pid is not None and stop_pid(pid, grace):
            stopped.append(name)
        pidfile.unlink(missing_ok=True)
    return stopped
