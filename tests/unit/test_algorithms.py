"""The memory store's algorithms against their definitions (tests/limits_model.py), on a
stepped clock: every verdict the same, the trailing window exact, the boundary burst shown.

The Redis scripts are held against the same model in tests/service/test_algorithms_redis.py
and, for Cluster and Sentinel, tests/topologies/test_algorithms_topologies.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatehouse.ratelimit.memory import MemoryWindowStore
from gatehouse.ratelimit.policy import SLIDING_LOG_MAX, Window
from tests.limits_model import LimitModel

T0 = 1_800_000_000_000  # ms since the epoch: the start of a second, a minute and an hour


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


@st.composite
def scenarios(draw: st.DrawFn, algorithm: str) -> tuple[list[Window], list[tuple[int, int]]]:
    """Windows of a route and a run of (ms since the last hit, cost) against them."""
    large = algorithm == "sliding" and draw(st.booleans())  # the two-counter kind
    count = draw(st.integers(1, 2))
    amounts = st.integers(SLIDING_LOG_MAX + 1, SLIDING_LOG_MAX + 3) if large else st.integers(1, 6)
    one_window = st.builds(Window, amounts, st.integers(1, 4))
    # Distinct: a route naming one window twice is refused (ratelimit.policy.parse_windows).
    windows = draw(st.lists(one_window, min_size=count, max_size=count, unique=True))
    smallest = min(w.amount for w in windows)
    costs = st.sampled_from(sorted({1, smallest // 3 or 1, smallest // 2 or 1, smallest}))
    gaps = st.one_of(st.integers(0, 50), st.integers(0, 2_500), st.sampled_from([1, 999, 1_000]))
    steps = draw(st.lists(st.tuples(gaps, costs), min_size=1, max_size=40))
    return windows, steps


def run_against_model(algorithm: str, windows: list[Window], steps: list[tuple[int, int]]):
    clock = Clock()
    clock.ms += 137  # not on a window's edge
    store = MemoryWindowStore(clock)
    model = LimitModel(algorithm, windows)
    keys = [f"k:{index}" for index in range(len(windows))]
    for gap, cost in steps:
        clock.ms += gap
        expected = model.hit(clock.ms, cost)
        assert store.hit_now(keys, windows, cost, algorithm) == expected, (clock.ms - T0, cost)
    return model


@pytest.mark.parametrize("algorithm", ["fixed", "sliding", "gcra"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_verdict_is_the_models(algorithm, data):
    windows, steps = data.draw(scenarios(algorithm))
    run_against_model(algorithm, windows, steps)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios("sliding"))
def test_the_sliding_log_never_admits_more_than_the_amount_in_any_trailing_window(scenario):
    windows, steps = scenario
    windows = [w for w in windows if w.amount <= SLIDING_LOG_MAX] or [Window(3, 1)]
    steps = [(gap, min(cost, windows[0].amount)) for gap, cost in steps]
    admitted = run_against_model("sliding", windows, steps).admitted()
    for window in windows:
        for at, _ in admitted:  # the trailing window ending at each admitted hit
            inside = sum(c for t, c in admitted if at - window.milliseconds < t <= at)
            assert inside <= window.amount


def burst_across_an_edge(algorithm: str) -> int:
    """Requests admitted in the 2 ms around a minute's edge, 10 a minute, one at a time."""
    clock = Clock()
    clock.ms += 59_999
    store = MemoryWindowStore(clock)
    admitted = 0
    for _ in range(20):
        admitted += store.hit_now(["k"], [Window(10, 60)], 1, algorithm).allowed
    clock.ms += 2
    for _ in range(20):
        admitted += store.hit_now(["k"], [Window(10, 60)], 1, algorithm).allowed
    return admitted


def test_a_fixed_window_admits_twice_its_limit_across_its_edge_and_the_others_do_not():
    assert burst_across_an_edge("fixed") == 20
    assert burst_across_an_edge("sliding") == 10
    assert burst_across_an_edge("gcra") == 10


def test_gcra_spaces_requests_after_the_burst():
    clock = Clock()
    store = MemoryWindowStore(clock)
    six_a_minute = [Window(6, 60)]  # a bucket of 6, one back every 10 s
    assert all(store.hit_now(["k"], six_a_minute, 1, "gcra").allowed for _ in range(6))
    refused = store.hit_now(["k"], six_a_minute, 1, "gcra")
    assert not refused.allowed and refused.retry_ms == 10_000
    clock.ms += 9_999
    assert not store.hit_now(["k"], six_a_minute, 1, "gcra").allowed
    clock.ms += 1
    assert store.hit_now(["k"], six_a_minute, 1, "gcra").allowed
    assert not store.hit_now(["k"], six_a_minute, 1, "gcra").allowed


def test_a_refused_sliding_request_is_told_exactly_when_it_fits():
    clock = Clock()
    store = MemoryWindowStore(clock)
    three_a_second = [Window(3, 1)]
    for offset in (0, 200, 700):
        clock.ms = T0 + offset
        assert store.hit_now(["k"], three_a_second, 1, "sliding").allowed
    clock.ms = T0 + 900
    refused = store.hit_now(["k"], three_a_second, 2, "sliding")  # needs two to leave
    assert (refused.allowed, refused.retry_ms) == (False, 300)  # the hit at 200 leaves at 1200
    clock.ms = T0 + 1_199
    assert not store.hit_now(["k"], three_a_second, 2, "sliding").allowed
    clock.ms = T0 + 1_200
    assert store.hit_now(["k"], three_a_second, 2, "sliding").allowed


def test_memory_is_given_back_as_redis_expires_keys():
    clock = Clock()
    store = MemoryWindowStore(clock)
    for algorithm in ("sliding", "gcra"):
        store.hit_now([f"{algorithm}:small"], [Window(2, 1)], 1, algorithm)
        store.hit_now([f"{algorithm}:large"], [Window(SLIDING_LOG_MAX + 1, 1)], 1, algorithm)
    clock.ms += 999  # both buckets have drained (one unit: 500 ms and 1 ms)
    store.sweep(clock.ms)
    assert set(store.logs) == {"sliding:small"} and set(store.pairs) == {"sliding:large"}
    assert store.buckets == {}
    clock.ms += 1_001  # the counters' window and the one after it are over too
    store.sweep(clock.ms)
    assert (store.logs, store.pairs, store.buckets, store.expiries) == ({}, {}, {}, {})
