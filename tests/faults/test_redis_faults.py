"""Redis stopped, paused, slowed and restarted under a bounded load, in each failure mode.

For every run the figures go to the end of the test output: the status mix, p99 and
worst latency, and the time from Redis coming back to the first check counted in it.
What must hold: no 500 (a 503 only in mode ``closed``), no request waiting much past
the Redis timeout, ``/healthz`` always 200, and back on the shared count within seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from tests.helpers import ROOT, RedisServer, free_port, stop_process, stored_hits, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

REDIS_TIMEOUT = 0.25
CONNECTIONS = 8
# The service's own measure of a request (its access log) may exceed the Redis timeout
# only by the work around the wait. The client's view adds this test process's own
# scheduling on a busy 2-core machine, so it is reported, not asserted.
SERVER_CEILING_MS = REDIS_TIMEOUT * 1000 + 100


class Proxy:
    """bench.delay_proxy in front of Redis, so a fault can make Redis slow."""

    def __init__(self, port: int, target: int, delay_ms: float) -> None:
        self.port, self.target = port, target
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_proxy", str(port), str(target), str(delay_ms)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        stop_process(self.process)
        if self.process.stdout:
            self.process.stdout.close()


@dataclass
class Run:
    results: list[tuple[float, float, int]] = field(
        default_factory=list
    )  # (start, latency, status)
    health: list[int] = field(default_factory=list)
    recovered_at: float | None = None
    shared_again_at: float | None = None

    def summary(self) -> str:
        statuses = Counter(status for _, _, status in self.results)
        latencies = sorted(latency for _, latency, _ in self.results)
        p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
        back = (
            f"{self.shared_again_at - self.recovered_at:.2f} s"
            if self.shared_again_at is not None and self.recovered_at is not None
            else "n/a"
        )
        mix = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        return (
            f"{len(self.results)} requests ({mix}); p99 {p99 * 1000:.0f} ms, "
            f"worst {latencies[-1] * 1000:.0f} ms; back on the shared count {back} after Redis returned"
        )


async def load(url: str, run: Run, stop: asyncio.Event, stop_at: float) -> None:
    """Requests on CONNECTIONS connections until ``stop`` is set, or ``stop_at`` at the latest."""

    def going() -> bool:
        return not stop.is_set() and time.monotonic() < stop_at

    async with httpx.AsyncClient(
        timeout=10, limits=httpx.Limits(max_connections=CONNECTIONS)
    ) as client:

        async def loop() -> None:
            while going():
                started = time.monotonic()
                response = await client.get(f"{url}/search?q=fault")
                run.results.append((started, time.monotonic() - started, response.status_code))

        async def health() -> None:
            while going():
                run.health.append((await client.get(f"{url}/healthz")).status_code)
                await asyncio.sleep(0.1)

        await asyncio.gather(*(loop() for _ in range(CONNECTIONS)), health())


def shared_count(redis: RedisServer) -> int:
    try:
        client = redis.client()
        return sum(stored_hits(client, key) for key in client.keys("gatehouse:*"))
    except Exception:
        return -1


async def scenario(fault: str, url: str, redis: RedisServer, proxy: Proxy | None, run: Run) -> None:
    """Load for ~1 s, the fault for ~1.5 s, then recovery, and load until the service is
    back on the shared count (3.5 s after Redis returned at most) and 5 s have passed.

    The end follows the recovery, not the clock: on a loaded machine, restarting the
    delay proxy alone has taken 0.7 s, and a fixed end left too little time to see the
    count come back."""
    started = time.monotonic()
    stop = asyncio.Event()
    load_task = asyncio.create_task(load(url, run, stop, started + 60))
    await asyncio.sleep(1.0)
    if fault == "stopped":
        await asyncio.to_thread(redis.kill)
        await asyncio.sleep(1.5)
        await asyncio.to_thread(redis.start)
    elif fault == "restarted":
        await asyncio.to_thread(redis.stop)
        await asyncio.to_thread(redis.start)
    elif fault == "paused":
        await asyncio.to_thread(redis.client().execute_command, "CLIENT", "PAUSE", "1500", "ALL")
        await asyncio.sleep(1.5)
    elif fault == "slowed":
        assert proxy is not None
        await asyncio.to_thread(proxy.stop)
        slow = await asyncio.to_thread(Proxy, proxy.port, proxy.target, 400)  # past the timeout
        await asyncio.sleep(1.5)
        await asyncio.to_thread(slow.stop)
        proxy.process = (await asyncio.to_thread(Proxy, proxy.port, proxy.target, 0)).process
    run.recovered_at = time.monotonic()
    baseline = await asyncio.to_thread(shared_count, redis)
    while time.monotonic() < run.recovered_at + 3.5:
        if await asyncio.to_thread(shared_count, redis) > max(baseline, 0):
            run.shared_again_at = time.monotonic()
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(max(0.0, started + 5.0 - time.monotonic()))
    stop.set()
    await load_task


@pytest.mark.parametrize("mode", ["open", "closed"])
@pytest.mark.parametrize("fault", ["stopped", "paused", "slowed", "restarted"])
def test_redis_fault_under_load(api_server, fault, mode, report_figure):
    redis = RedisServer()
    redis.start()
    proxy = Proxy(free_port(), redis.port, 0)
    try:
        server = api_server(
            {
                "APP_REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
                "APP_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
                "APP_REDIS_RETRY_INTERVAL": "0.3",
                "APP_RATE_LIMIT_FAILURE_MODE": mode,
                "APP_RATE_LIMIT_SEARCH": "100000/minute",
                "APP_ACCESS_LOG": "true",
            }
        )
        wait_until(
            lambda: httpx.get(f"{server.url}/search?q=warm").status_code == 200, what="warm-up"
        )
        run = Run()
        asyncio.run(scenario(fault, server.url, redis, proxy, run))
        server.stop()
        server_ms = [
            entry["duration_ms"]
            for entry in map(
                json.loads, filter(lambda line: line.startswith("{"), server.log().splitlines())
            )
            if entry.get("route") == "/search"
        ]
    finally:
        proxy.stop()
        redis.stop()

    report_figure(
        f"redis {fault:9s} mode {mode:6s}: {run.summary()}; server-side worst {max(server_ms):.0f} ms"
    )
    statuses = Counter(status for _, _, status in run.results)
    if mode == "open":
        # Served through every fault, from the local fallback while Redis is away.
        assert set(statuses) == {200}, statuses
    elif fault == "restarted":
        # Down for the moment a restart takes: a check may or may not land in it.
        assert set(statuses) in ({200}, {200, 503}), statuses
    else:
        # 1.5 s without a timely answer: refused (503) then, admitted before and after.
        assert set(statuses) == {200, 503}, statuses
    assert set(run.health) == {200}
    assert len(server_ms) >= len(run.results)
    assert max(server_ms) < SERVER_CEILING_MS, (
        f"a request waited {max(server_ms):.0f} ms in the service"
    )
    assert run.shared_again_at is not None, "never back on the shared count"
    assert run.shared_again_at - run.recovered_at < 3.0
