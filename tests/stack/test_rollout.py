"""``helm upgrade`` of a running environment, under traffic through the ingress.

Two kinds of change, as the chart's config checksum sorts them:
- the reloadable keys (allowed origins, the rate-limit policy): the pod template stays,
  so no pod is replaced; the kubelet rewrites the mounted ConfigMap and every replica
  applies the new allowlist on its own;
- anything read at start (here the log level): a new template, so the pods are
  replaced one by one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stack.containers import ContainerProcess
from stack.processes import Process, group_members

from stack import Pod, Stack
from tests import helpers
from tests.stack.conftest import CLIENT_A, CLIENT_DIRECT, metric_samples, start

NEW_ORIGIN = "http://new-a.localtest:5175"
# The load below sends thousands of /whoami in a few seconds: none may meet a 429.
HIGH_DEFAULT_LIMIT = "100000/hour"
# Each replica polls the mounted files every APP_CONFIG_RELOAD_INTERVAL (2 s by default);
# this only bounds the wait, it is no measure of it.
RELOAD_DEADLINE = 30.0


@pytest.fixture(scope="module")
def rolling() -> Iterator[Stack]:
    stack = start("local", sets=[f"config.rateLimit.default={HIGH_DEFAULT_LIMIT}"])
    yield stack
    stack.down()


@contextlib.contextmanager
def traffic(stack: Stack, host: str) -> Iterator[Counter[int | str]]:
    """GET /whoami through the ingress, one at a time, until the block ends; yields the
    count of statuses (and of transport errors, by name) as they come."""
    seen: Counter[int | str] = Counter()
    stop = threading.Event()

    def load() -> None:
        transport = httpx.HTTPTransport(local_address=CLIENT_A)
        with httpx.Client(base_url=stack.ingress_url, transport=transport, timeout=10) as session:
            while not stop.is_set():
                try:
                    try:
                        response = session.get("/whoami", headers={"Host": host})
                    except (httpx.ReadError, httpx.RemoteProtocolError):
                        # nginx's reload closed an idle keep-alive connection as it was
                        # reused (see Stack.rollout); a GET may be retried, and is.
                        seen["reset, retried"] += 1
                        response = session.get("/whoami", headers={"Host": host})
                    seen[response.status_code] += 1
                except httpx.HTTPError as error:  # counted, so the test sees it
                    seen[type(error).__name__] += 1

    loader = threading.Thread(target=load)
    loader.start()
    try:
        yield seen
    finally:
        stop.set()
        loader.join()


def allowed(stack: Stack, pod: Pod, origin: str) -> str | None:
    """Access-Control-Allow-Origin from one replica's serving port, for ``origin``."""
    transport = httpx.HTTPTransport(local_address=CLIENT_DIRECT)
    with httpx.Client(transport=transport, timeout=5) as session:
        response = session.get(
            f"http://{pod.ip}:{pod.port('http')}/whoami",
            headers={"Host": stack.host(pod.env), "Origin": origin},
        )
    assert response.status_code == 200, response.text
    allowed_origin: str | None = response.headers.get("access-control-allow-origin")
    return allowed_origin


def allowed_through_ingress(stack: Stack, env: str, origin: str) -> str | None:
    response = httpx.get(
        f"{stack.ingress_url}/whoami",
        headers={"Host": stack.host(env), "Origin": origin},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    allowed_origin: str | None = response.headers.get("access-control-allow-origin")
    return allowed_origin


def applied_reloads(pod: Pod) -> float:
    """gatehouse_config_reloads_total{result="applied"} of one replica (0 before any)."""
    samples = metric_samples(pod, "gatehouse_config_reloads_total")
    return sum(value for labels, value in samples if labels.get("result") == "applied")


def started_with(process: Process) -> dict[str, str]:
    """The environment a container was started with (a container's reaches the engine)."""
    return process.create_env if isinstance(process, ContainerProcess) else process.env


def config_volume(pod: Pod) -> Path:
    return pod.root / "volumes" / "config"


def test_new_origins_reach_the_running_pods_without_replacing_them(rolling: Stack) -> None:
    stack = rolling
    host = stack.host("local")
    old_origin = stack.config("local")["APP_ALLOWED_ORIGINS"].split(",")[0]
    pods = stack.pods("local")
    groups = {process.pid for pod in pods for process in pod.processes if process.pid}
    running_containers = sorted(stack.containers(running_only=True))  # none for processes
    redis_before = stack.pods("local", "redis")[0]
    reloads_before = [applied_reloads(pod) for pod in pods]
    assert stack.nginx is not None
    nginx_generation = stack.nginx.generation
    volume = config_volume(pods[0])
    data_before = os.readlink(volume / "..data")
    assert [allowed(stack, pod, old_origin) for pod in pods] == [old_origin] * len(pods)
    assert [allowed(stack, pod, NEW_ORIGIN) for pod in pods] == [None] * len(pods)

    with traffic(stack, host) as seen:
        started = time.monotonic()
        stack.rollout("local", f"config.allowedOrigins={{{NEW_ORIGIN}}}")
        # The files changed under the running pods; each replica finds out by itself.
        helpers.wait_until(
            lambda: all(allowed(stack, pod, NEW_ORIGIN) == NEW_ORIGIN for pod in pods),
            timeout=RELOAD_DEADLINE,
            interval=0.2,
            what=f"every replica allowing {NEW_ORIGIN}",
        )
        took = time.monotonic() - started

    print(
        f"\norigins changed on {len(pods)} running pods, applied by all in {took:.1f} s; "
        f"{sum(seen.values())} requests meanwhile: {dict(seen)}"
    )
    # The same pods, still running: nothing was replaced, and nginx was never reloaded.
    assert all(now is pod for now, pod in zip(stack.pods("local"), pods, strict=True))
    assert all(pod.running() for pod in pods) and stack.nginx.generation == nginx_generation
    assert all(group_members({pgid}) for pgid in groups), "a pod's process was replaced"
    assert sorted(stack.containers(running_only=True)) == running_containers
    assert stack.pods("local", "redis")[0] is redis_before
    assert seen[200] > 0 and set(seen) == {200}
    # Each replica applied exactly one reload, from the file; the old allowlist is gone.
    assert [applied_reloads(pod) - n for pod, n in zip(pods, reloads_before, strict=True)] == [
        1
    ] * len(pods)
    assert [allowed(stack, pod, old_origin) for pod in pods] == [None] * len(pods)
    assert allowed_through_ingress(stack, "local", NEW_ORIGIN) == NEW_ORIGIN
    assert allowed_through_ingress(stack, "local", old_origin) is None
    # The kubelet's layout: the key is a link through ..data, which now names a new set.
    assert os.readlink(volume / "..data") != data_before
    assert os.readlink(volume / "..data").startswith("..20")
    assert os.readlink(volume / "APP_ALLOWED_ORIGINS") == "..data/APP_ALLOWED_ORIGINS"
    assert (volume / "APP_ALLOWED_ORIGINS").read_text() == NEW_ORIGIN


def test_a_setting_read_at_start_replaces_the_pods_one_by_one_without_errors(
    rolling: Stack,
) -> None:
    stack = rolling
    host = stack.host("local")
    level = stack.config("local")["APP_LOG_LEVEL"]
    new_level = "warning" if level != "warning" else "info"
    old_pods = stack.pods("local")
    old_groups = {process.pid for pod in old_pods for process in pod.processes if process.pid}
    old_containers = stack.containers()  # none for the process runtime
    redis_before = stack.pods("local", "redis")[0]

    with traffic(stack, host) as seen:
        started = time.monotonic()
        stack.rollout("local", f"config.logLevel={new_level}")
        took = time.monotonic() - started

    new_pods = stack.pods("local")
    print(
        f"\nrollout of {len(new_pods)} pods in {took:.1f} s: {[p.ip for p in old_pods]} -> "
        f"{[p.ip for p in new_pods]}; {sum(seen.values())} requests meanwhile: {dict(seen)}"
    )
    assert seen[200] > 0 and set(seen) <= {200, "reset, retried"}
    assert len(new_pods) == len(old_pods)
    assert {pod.ip for pod in new_pods}.isdisjoint({pod.ip for pod in old_pods})
    assert not group_members(old_groups), "an old pod's process is still running"
    # New pods are new containers; the old ones are gone from the engine.
    assert set(stack.containers()).isdisjoint(old_containers)
    assert len(stack.containers(running_only=True)) == len(old_containers)
    assert stack.pods("local", "redis")[0] is redis_before  # its template did not change
    # The new pods started with the new value, from the new ConfigMap.
    assert [started_with(p)["APP_LOG_LEVEL"] for pod in new_pods for p in pod.processes] == [
        new_level
    ] * len(new_pods)
    assert (config_volume(new_pods[0]) / "APP_LOG_LEVEL").read_text() == new_level
