"""The stack layer: the chart rendered for local environments, run on loopback.

Every test goes through ``stack.Stack``: ``scripts/helm template`` output, Redis and the
Deployment's replicas as local processes, nginx as the ingress controller. Clients
connect from 127.0.50.x, outside the trusted ingress CIDR (127.0.10.0/24).

``STACK_RUNTIME=container`` runs the whole suite with the API replicas as containers of
``IMAGE`` (``make test-stack-container``); the ``runtime`` fixture reads it, and makes
sure of the engine and the image once, failing with one line when either cannot be had.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from limits import parse_many
from prometheus_client.parser import text_string_to_metric_families
from stack.containers import ensure_engine, ensure_image
from stack.harness import RUNTIMES
from stack.processes import StartError

from stack import ENVIRONMENTS, Pod, Stack
from tests import helpers
from tests.helpers import ROOT

MISSING = [
    name
    for name, fallback in (("nginx", "/usr/sbin/nginx"), ("redis-server", None))
    if shutil.which(name) is None and not (fallback and Path(fallback).exists())
]

CLIENT_A = "127.0.50.1"
CLIENT_B = "127.0.50.2"
CLIENT_DIRECT = "127.0.50.3"


def stack_runtime() -> str:
    """The runtime the suite runs the stack with: ``$STACK_RUNTIME``, else process."""
    return os.environ.get("STACK_RUNTIME") or "process"


RUNTIME = stack_runtime()


@pytest.fixture(scope="session", autouse=True)
def _stack_tools() -> None:
    if MISSING:
        pytest.skip(
            f"{' and '.join(MISSING)} not installed (make stack-deps installs nginx-light, redis-server)"
        )


@pytest.fixture(scope="session", autouse=True)
def runtime(_stack_tools: None) -> Iterator[str]:
    """``$STACK_RUNTIME`` (process by default). For container: the engine and the image,
    once (built when missing); a dockerd started here is stopped at the end."""
    if RUNTIME not in RUNTIMES:
        pytest.fail(f"STACK_RUNTIME={RUNTIME}: choose one of {', '.join(RUNTIMES)}", pytrace=False)
    if RUNTIME != "container":
        yield RUNTIME
        return
    image = os.environ.get("IMAGE") or "gatehouse-api:dev"
    try:
        started_engine = ensure_engine()
        ensure_image(image)
    except StartError as error:
        pytest.fail(f"STACK_RUNTIME=container: {error}", pytrace=False)
    yield RUNTIME
    if started_engine and not os.environ.get("GATEHOUSE_KEEP_DOCKER"):
        subprocess.run([str(ROOT / "scripts/docker-engine"), "stop"], capture_output=True)


def start(*envs: str, sets: Sequence[str] = ()) -> Stack:
    """A stack of the named environments, each rendered with the extra ``--set`` values,
    on the suite's runtime."""
    return Stack([ENVIRONMENTS[env].with_sets(*sets) for env in envs], runtime=RUNTIME).up()


@pytest.fixture(scope="module")
def pair() -> Iterator[Stack]:
    """Namespaces A (local) and B (local-b) side by side, as rendered, for a module's
    tests; ``flushed`` empties both Redis servers before a test."""
    stack = start("local", "local-b")
    yield stack
    stack.down()


@pytest.fixture
def flushed(pair: Stack) -> Stack:
    for env in pair.envs:
        pair.redis_client(env).flushall()
    return pair


def client(stack: Stack, source: str = CLIENT_A, **kwargs: object) -> httpx.Client:
    """A client of the ingress from ``source`` (a 127.0.50.x address)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=stack.ingress_url, transport=transport, timeout=10, **kwargs)  # type: ignore[arg-type]


def window_seconds(limit: str) -> int:
    return max(item.get_expiry() for item in parse_many(limit))


def wait_for_fresh_window(stack: Stack, env: str, limit: str, needed: float) -> None:
    """``tests.helpers.wait_for_fresh_window`` on the clock of the environment's Redis."""

    def redis_now() -> float:
        seconds, micros = stack.redis_client(env).time()
        return float(seconds + micros / 1e6)

    helpers.wait_for_fresh_window(window_seconds(limit), needed, now=redis_now)


def management(pod: Pod, path: str) -> httpx.Response:
    """GET ``path`` on a replica's management port (``metrics``), as the kubelet's probes
    and a scraper reach it: straight to the pod, Host being the pod's address."""
    return httpx.get(f"http://{pod.ip}:{pod.port('metrics')}{path}", timeout=5)


def metric_samples(pod: Pod, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in one replica's /metrics."""
    response = management(pod, "/metrics")
    assert response.status_code == 200, response.text
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name
    ]


def search_counts(pod: Pod) -> Counter[str]:
    """Requests to /search by status, from one replica's /metrics."""
    counts: Counter[str] = Counter()
    for labels, value in metric_samples(pod, "gatehouse_http_requests_total"):
        if labels.get("route") == "/search":
            counts[labels["status"]] += int(value)
    return counts


# The status recorded for a reply whose connection closed before its body was complete:
# nginx had passed on the headers of a replica that was then killed, so it cannot retry.
CUT = 0


@dataclass
class Reply:
    status: int  # CUT for a reply cut off mid-body
    headers: httpx.Headers
    at: float  # time.monotonic() when the reply arrived (or was cut off)
    sent: float  # time.monotonic() when its request left (its turn among the concurrent)


async def _burst(
    stack: Stack,
    host: str,
    path: str,
    count: int,
    concurrency: int,
    source: str,
    headers: dict[str, str],
    at_reply: tuple[int, Callable[[], object]] | None,
    allow_cut: bool,
) -> list[Reply]:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=stack.ingress_url, transport=transport, limits=limits, timeout=20
    ) as session:
        answered = 0

        async def one() -> Reply:
            nonlocal answered
            async with semaphore:
                sent = time.monotonic()
                try:
                    response = await session.get(path, headers={"Host": host, **headers})
                    reply = Reply(response.status_code, response.headers, time.monotonic(), sent)
                except httpx.RemoteProtocolError:
                    if not allow_cut:
                        raise
                    reply = Reply(CUT, httpx.Headers(), time.monotonic(), sent)
                answered += 1
                if at_reply is not None and answered == at_reply[0]:
                    at_reply[1]()  # e.g. a SIGKILL: takes milliseconds, the load goes on
                return reply

        return list(await asyncio.gather(*(one() for _ in range(count))))


def burst(
    stack: Stack,
    env: str,
    count: int,
    *,
    concurrency: int | None = None,
    path: str = "/search?q=lamp",
    source: str = CLIENT_A,
    headers: dict[str, str] | None = None,
    at_reply: tuple[int, Callable[[], object]] | None = None,
    allow_cut: bool = False,
) -> list[Reply]:
    """``count`` GETs through the ingress, ``concurrency`` at a time (default: all at once);
    ``at_reply=(n, action)`` runs the action once the n-th reply has arrived;
    ``allow_cut`` records a reply cut off mid-body as ``CUT`` instead of raising."""
    return asyncio.run(
        _burst(
            stack,
            stack.host(env),
            path,
            count,
            concurrency or count,
            source,
            headers or {},
            at_reply,
            allow_cut,
        )
    )


def statuses(replies: Sequence[Reply]) -> dict[int, int]:
    return dict(sorted(Counter(reply.status for reply in replies).items()))


def redis_search_count(stack: Stack, env: str) -> int:
    """The shared count of /search in the environment's Redis (every window key summed)."""
    redis = stack.redis_client(env)
    # gatehouse:{<client>}:<route>:<amount>/<seconds>[:log]
    keys = [key for key in redis.keys("gatehouse:*") if b"}:/search:" in key]
    return sum(helpers.stored_hits(redis, key) for key in keys)
