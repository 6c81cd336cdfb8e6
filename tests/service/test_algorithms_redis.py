"""The Redis scripts of every algorithm against their definitions, on a real redis-server,
three replicas (connections) taking turns: every verdict the model's (tests/limits_model.py).
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.ratelimit.pipeline import PipelinedRedis
from gatehouse.ratelimit.policy import SLIDING_LOG_MAX, Window
from gatehouse.ratelimit.redis_store import PipelinedRunner
from gatehouse.ratelimit.script import Verdict
from tests.algorithm_runs import run_against_model
from tests.unit.test_algorithms import scenarios

REPLICAS = 3


def run(
    redis_db, algorithm: str, windows: list[Window], steps: list[tuple[int, int]]
) -> list[Verdict]:
    async def scenario() -> list[Verdict]:
        runners = [
            PipelinedRunner(PipelinedRedis("127.0.0.1", redis_db.port, timeout=5.0))
            for _ in range(REPLICAS)
        ]
        try:
            return await run_against_model(runners, algorithm, windows, steps)
        finally:
            for runner in runners:
                await runner.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("algorithm", ["sliding", "gcra"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_verdict_of_the_script_is_the_models(redis_server, algorithm, data):
    windows, steps = data.draw(scenarios(algorithm))
    run(redis_server, algorithm, windows, steps)


def test_a_boundary_burst_is_refused_by_the_sliding_script(redis_server):
    # 10 a minute; 10 hits 1 ms before a minute's edge, then 10 just after it: a fixed
    # window would admit all 20, the trailing window admits none of the second ten.
    before_edge = [(59_862, 1)] + [(0, 1)] * 9  # T0 is 137 ms into a minute
    after_edge = [(2, 1)] + [(0, 1)] * 9
    # (The fixed script's windows end by key expiry, on Redis's real clock: the memory
    # store shows its 20, tests/unit/test_algorithms.py.)
    verdicts = run(redis_server, "sliding", [Window(10, 60)], before_edge + after_edge)
    assert [verdict.allowed for verdict in verdicts] == [True] * 10 + [False] * 10


def test_the_large_sliding_kind_and_gcra_run_on_redis_with_several_windows(redis_server):
    windows = [Window(SLIDING_LOG_MAX + 1, 1), Window(SLIDING_LOG_MAX + 2, 3)]
    steps = [(250, 500), (250, 500), (250, 2), (600, 1_000), (1, 1), (1_999, 1_000)]
    run(redis_server, "sliding", windows, steps)
    run(redis_server, "gcra", [Window(3, 1), Window(5, 4)], [(100, 1)] * 12)
