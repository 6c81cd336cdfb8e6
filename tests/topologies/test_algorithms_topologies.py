"""Every algorithm's script on Redis Cluster and through Sentinel, three replicas taking
turns, each verdict the model's (tests/limits_model.py): what a deployment on those
topologies runs, through the same client the service picks for them (redis-py)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.ratelimit.redis_store import RedisPyRunner
from tests.algorithm_runs import run_against_model
from tests.topologies.conftest import PASSWORD
from tests.unit.test_algorithms import scenarios

REPLICAS = 3


def run(url: str, algorithm: str, data: st.DataObject) -> None:
    windows, steps = data.draw(scenarios(algorithm))

    async def scenario() -> None:
        runners = [RedisPyRunner.from_url(url, PASSWORD, timeout=5.0) for _ in range(REPLICAS)]
        try:
            await run_against_model(runners, algorithm, windows, steps)
        finally:
            for runner in runners:
                await runner.close()

    asyncio.run(scenario())


# One topology per test (started once for its examples): fewer examples than on one
# redis-server, which runs the same scripts through the other client.
EXAMPLES = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.mark.parametrize("algorithm", ["sliding", "gcra"])
@EXAMPLES
@given(data=st.data())
def test_on_redis_cluster_every_verdict_is_the_models(cluster, algorithm, data):
    run(cluster.url, algorithm, data)


@pytest.mark.parametrize("algorithm", ["sliding", "gcra"])
@EXAMPLES
@given(data=st.data())
def test_through_sentinel_every_verdict_is_the_models(sentinel_set, algorithm, data):
    run(sentinel_set.url, algorithm, data)
