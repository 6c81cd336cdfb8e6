"""Runs of hits against the Redis scripts on a clock the test steps, checked against
tests/limits_model.py, shared by the service layer (one redis-server) and the topology
layer (Cluster, Sentinel).

The scripts run as written except for their clock (``script.with_argv_clock``): the time
comes from the last argument, so a run can step across window edges in microseconds and
compare every verdict with the model's. Several stores, each with its own connection,
take turns: the replicas of a deployment sharing one Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.ratelimit.redis_store import RedisWindowStore, ScriptRunner
from gatehouse.ratelimit.script import CHECK_SCRIPTS, Verdict, with_argv_clock
from tests.limits_model import LimitModel

T0 = 1_800_000_000_137  # ms since the epoch, off every window's edge
ARGV_CLOCK_SCRIPTS = {name: with_argv_clock(source) for name, source in CHECK_SCRIPTS.items()}


class SteppedClockRunner:
    """A runner whose scripts get the test's time as their last argument."""

    def __init__(self, runner: ScriptRunner, clock: list[int]) -> None:
        self.runner = runner
        self.clock = clock  # one shared cell: [ms]

    def script(self, source: str) -> Callable[[Sequence[str], Sequence[int]], Awaitable[Any]]:
        call = self.runner.script(source)
        return lambda keys, args: call(keys, [*args, self.clock[0]])

    async def ping(self) -> bool:
        return await self.runner.ping()

    async def close(self) -> None:
        await self.runner.close()


async def run_against_model(
    runners: Sequence[ScriptRunner],
    algorithm: str,
    windows: list[Window],
    steps: list[tuple[int, int]],
) -> list[Verdict]:
    """Each step (ms since the last, cost) goes to the next replica in turn; every
    verdict must be the model's. Returns the verdicts."""
    clock = [T0]
    stores = [
        RedisWindowStore(SteppedClockRunner(runner, clock), scripts=ARGV_CLOCK_SCRIPTS)
        for runner in runners
    ]
    cost_free = RoutePolicy("p", "/p", tuple(windows), algorithm=algorithm)  # type: ignore[arg-type]
    client = uuid.uuid4().hex  # a fresh client per run: no state from another
    keys = [f"test:{{{client}}}{suffix}" for suffix in cost_free.key_suffixes]
    model = LimitModel(algorithm, windows)
    verdicts: list[Verdict] = []
    for turn, (gap, cost) in enumerate(steps):
        clock[0] += gap
        policy = RoutePolicy("p", "/p", tuple(windows), cost=cost, algorithm=algorithm)  # type: ignore[arg-type]
        store = stores[turn % len(stores)]
        verdict = store.verdict(await store.call(keys, policy), 0.0)
        assert verdict == model.hit(clock[0], cost), (algorithm, windows, clock[0] - T0, cost)
        verdicts.append(verdict)
    return verdicts
