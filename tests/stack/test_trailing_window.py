"""The default algorithm through the ingress: three replicas, one Redis, a burst on each
side of a window's edge. A fixed window would admit the limit twice within seconds; the
trailing window admits it once."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from stack import Stack
from tests.stack.conftest import burst, search_counts, start, statuses

SEARCH_LIMIT = "10/10 seconds"  # short windows: the edge is at most 10 s away
SPAN = 10.0


@pytest.fixture(scope="module")
def sliding() -> Iterator[Stack]:
    stack = start(
        "local",
        sets=[f"config.rateLimit.search={SEARCH_LIMIT}", "config.rateLimit.algorithm=sliding"],
    )
    yield stack
    stack.down()


def redis_now(stack: Stack) -> float:
    seconds, micros = stack.redis_client("local").time()
    return float(seconds + micros / 1e6)


def test_a_burst_each_side_of_an_edge_admits_the_limit_once_over_three_replicas(
    sliding: Stack,
) -> None:
    stack = sliding
    assert stack.config("local")["APP_RATE_LIMIT_SEARCH"] == SEARCH_LIMIT
    replicas = stack.pods("local")
    assert len(replicas) == 3
    before = [search_counts(pod) for pod in replicas]
    # The first burst late in a 10 s window (Redis's clock): 2 to 3.5 s before its edge.
    phase = redis_now(stack) % SPAN
    time.sleep((6.5 - phase) % SPAN)
    first_sent = redis_now(stack)
    first = statuses(burst(stack, "local", 60))
    edge = (first_sent // SPAN + 1) * SPAN
    time.sleep(max(0.0, edge - redis_now(stack)) + 0.2)
    second_sent = redis_now(stack)
    second = statuses(burst(stack, "local", 60))
    second_done = redis_now(stack)
    per_replica = [
        sum((search_counts(pod) - old).values()) for pod, old in zip(replicas, before, strict=True)
    ]
    print(
        f"\nlimit {SEARCH_LIMIT}, sliding: before the edge {first}, after it {second} "
        f"({second_sent - first_sent:.2f} s apart); per replica {per_replica}"
    )
    # Both bursts inside one trailing window, on either side of a fixed window's edge.
    assert first_sent < edge < second_sent and second_done - first_sent < SPAN
    assert first == {200: 10, 429: 50}
    assert second == {429: 60}
    assert all(served > 0 for served in per_replica), "nginx skipped a replica"
