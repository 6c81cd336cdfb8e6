"""The container runtime once, whatever ``STACK_RUNTIME`` says: the API replicas are
containers of the image, restricted as the rendered pod says, behind the same ingress.

Needs a container engine (``scripts/docker-engine``); without one, one skip line.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack.containers import ContainerProcess, docker, ensure_engine, ensure_image, labelled
from stack.processes import StartError

from stack import ENVIRONMENTS, Stack
from tests.helpers import ROOT
from tests.stack.conftest import burst, statuses, wait_for_fresh_window


@pytest.fixture(scope="module")
def engine() -> Iterator[None]:
    try:
        started = ensure_engine()
    except StartError as error:
        pytest.skip(f"container runtime: {error}")
    yield
    if started and not os.environ.get("GATEHOUSE_KEEP_DOCKER"):
        subprocess.run([str(ROOT / "scripts/docker-engine"), "stop"], capture_output=True)


@pytest.fixture(scope="module")
def contained(engine: None) -> Iterator[Stack]:
    image = os.environ.get("IMAGE") or "gatehouse-api:dev"
    try:
        ensure_image(image)  # built by scripts/build-image when missing
    except StartError as error:
        pytest.fail(str(error), pytrace=False)
    stack = Stack([ENVIRONMENTS["local"]], runtime="container", image=image).up()
    yield stack
    stack.down()
    assert labelled(stack.label) == [], "a container outlived the stack"


def inspect(name: str) -> dict[str, Any]:
    result = docker("inspect", name)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)[0])


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_the_replicas_are_containers_restricted_as_the_pod_is(contained: Stack) -> None:
    stack = contained
    names = stack.containers(running_only=True)
    pods = stack.pods("local")
    assert len(names) == len(pods) == 3
    redis = stack.pods("local", "redis")[0]
    assert not isinstance(redis.processes[0], ContainerProcess)  # Redis stays a process
    for name in names:
        info = inspect(name)
        host = info["HostConfig"]
        assert info["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] in (["ALL"], ["all"])
        assert not host["CapAdd"]
        assert "no-new-privileges" in (host["SecurityOpt"] or [])
        assert host["NetworkMode"] == "host"
        assert "/tmp" in (host["Tmpfs"] or {})
        assert host["GroupAdd"] == ["10001"]  # the pod's fsGroup
        mounts = {mount["Destination"]: mount for mount in info["Mounts"]}
        assert mounts["/etc/gatehouse"]["RW"] is False
        assert Path(mounts["/etc/gatehouse"]["Source"]).is_relative_to(stack.root)
        # What the kernel says about the running service: its uids, and no capability.
        status = proc_status(int(info["State"]["Pid"]))
        assert status["Uid"].split() == ["10001"] * 4
        assert status["Gid"].split() == ["10001"] * 4
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # docker's default profile (RuntimeDefault)
        # The ConfigMap file the service reads, through the read-only bind mount.
        origins = docker("exec", name, "cat", "/etc/gatehouse/APP_ALLOWED_ORIGINS")
        assert origins.stdout == stack.config("local")["APP_ALLOWED_ORIGINS"]
        write = docker("exec", name, "touch", "/etc/gatehouse/x", "/opt/x")
        assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_through_the_ingress_cors_and_the_shared_limit_hold(contained: Stack) -> None:
    stack = contained
    config = stack.config("local")
    origin = config["APP_ALLOWED_ORIGINS"].split(",")[0]
    limit = config["APP_RATE_LIMIT_SEARCH"]
    amount = int(limit.split("/")[0])
    stack.redis_client("local").flushall()
    wait_for_fresh_window(stack, "local", limit, needed=10)
    replies = burst(stack, "local", amount + 5, concurrency=4, headers={"Origin": origin})
    print(f"\ncontainers, {limit} through nginx: {statuses(replies)}")
    assert statuses(replies) == {200: amount, 429: 5}
    for reply in replies:
        assert reply.headers.get("access-control-allow-origin") == origin
        assert "origin" in reply.headers.get("vary", "").lower()
    assert all(int(r.headers["retry-after"]) >= 1 for r in replies if r.status == 429)
