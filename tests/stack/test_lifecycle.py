"""Start, stop and failure: nothing the stack started outlives it, process or container."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from stack.containers import labelled
from stack.processes import StartError, group_members

from stack import ENVIRONMENTS, Stack
from tests.stack.conftest import RUNTIME, start

ROOT = Path(__file__).resolve().parents[2]


def processes_under(root: Path) -> list[int]:
    """Live processes whose working directory is inside ``root`` (every pod's and nginx's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(root)):
                found.append(int(entry.name))
    return found


def containers_left(label: str) -> list[str]:
    """The stack's containers the engine still has, in any state (none for processes)."""
    return labelled(label) if RUNTIME == "container" else []


def test_stop_leaves_no_process_and_no_files() -> None:
    stack = start("local")
    groups = stack.process_groups()
    # nginx (master + 2 workers), 3 API replicas, Redis: each group has live members
    # (for a container, the group of its attached `docker start`).
    assert len(groups) == 5
    assert len(group_members(groups)) >= 7
    assert len(stack.containers(running_only=True)) == (3 if RUNTIME == "container" else 0)
    root = stack.root
    stack.down()
    assert group_members(groups) == []
    assert containers_left(stack.label) == []
    assert not root.exists()
    stack.down()  # twice is harmless


def test_a_failed_start_tears_down_what_had_started() -> None:
    # extraEnv is free-form in the chart; the service refuses the value and exits with
    # one line, after Redis had already started.
    stack = Stack(
        [
            ENVIRONMENTS["local"].with_sets(
                "extraEnv[0].name=APP_RATE_LIMIT_SEARCH", "extraEnv[0].value=lots"
            )
        ],
        runtime=RUNTIME,
    )
    with pytest.raises(StartError, match="APP_RATE_LIMIT_SEARCH") as failure:
        stack.up()
    print(f"\nfailed start: {str(failure.value).splitlines()[-1]}")
    groups = stack.process_groups()
    assert groups, "Redis and the replicas had been started"
    assert group_members(groups) == []
    assert containers_left(stack.label) == []
    assert not stack.root.exists()


def _read_lines(stream: object, lines: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.put(line)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_make_stack_command_stops_cleanly_on_a_signal(signum: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stack", "up", "--env", "local", "--runtime", RUNTIME],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in output):
            assert process.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "".join(output)
            with contextlib.suppress(queue.Empty):
                output.append(lines.get(timeout=1))
        text = "".join(output)
        ingress = next(line for line in output if line.startswith("ingress (nginx):"))
        url, logs = ingress.split()[2], Path(ingress.split("logs ")[1].strip())
        root = logs.parent.parent
        host = next(line.split("(Host ")[1].split()[0] for line in output if "(Host " in line)
        # A routed path: the probe paths are on the pods' management port, never routed.
        whoami = httpx.get(f"{url}/whoami", headers={"Host": host}, timeout=5)
        assert whoami.status_code == 200 and whoami.json()["host"] == host
        assert "curl -si --resolve" in text and "Origin: " in text and "seq 11" in text
        children = processes_under(root)
        assert len(children) >= 7
        if RUNTIME == "container":
            assert len(labelled(str(root), running_only=True)) == 3

        process.send_signal(signum)
        assert process.wait(30) == 0
        assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
        assert containers_left(str(root)) == []
        assert not root.exists()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(10)  # the pipe's end of file ends it
        assert process.stdout is not None
        process.stdout.close()
