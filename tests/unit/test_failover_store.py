"""FailoverStore with a stand-in for the shared Redis store and clocks the test steps.

The stand-in is the only thing faked: the fallback is the real MemoryWindowStore, the
policies real RoutePolicies. Redis itself failing is tests/service/test_redis_outage.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import pytest

from gatehouse.ratelimit.errors import StorageError
from gatehouse.ratelimit.failover import FailoverStore, FailureMode, LimitUnavailable
from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.ratelimit.script import Verdict

pytestmark = pytest.mark.anyio

WALL_T0 = 1_800_000_000_000  # ms: the start of a second and a minute
MONOTONIC_T0 = 5_000_000  # ms: any value; only differences count
SHARED = Verdict(True, (7,), (42_000,))  # what the shared store answers: no memory count
KEYS = ["gatehouse:{ip:203.0.113.7}:/search:9/60"]
NINE_A_MINUTE = RoutePolicy("search", "/search", (Window(9, 60),))


class Clocks:
    """The monotonic clock (retries) and the wall clock (windows), moved together."""

    def __init__(self) -> None:
        self.elapsed_ms = 0

    def monotonic(self) -> float:
        return (MONOTONIC_T0 + self.elapsed_ms) / 1000

    def wall(self) -> float:
        return (WALL_T0 + self.elapsed_ms) / 1000

    def at(self, elapsed_ms: int) -> None:
        self.elapsed_ms = elapsed_ms


class FakeSharedStore:
    """Stands in for RedisWindowStore: answers SHARED, or fails like an unreachable Redis."""

    def __init__(self) -> None:
        self.failing = False
        self.calls = 0
        self.gate: asyncio.Event | None = None  # when set, each call waits for it

    async def call(self, keys: Sequence[str], policy: RoutePolicy) -> str:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StorageError("ConnectionError: connection refused")
        return "reply"

    def verdict(self, reply: str, started: float) -> Verdict:
        assert reply == "reply"
        return SHARED


class Harness:
    def __init__(
        self,
        shared: FakeSharedStore | None,
        mode: FailureMode = "open",
        replicas: int = 3,
        retry_interval: float = 2.0,
    ) -> None:
        self.clocks = Clocks()
        self.events: list[str] = []
        self.store = FailoverStore(
            shared,  # type: ignore[arg-type]  # a stand-in for RedisWindowStore
            mode=mode,
            replicas=replicas,
            retry_interval=retry_interval,
            logger=logging.getLogger("test.failover"),
            on_error=lambda: self.events.append("error"),
            on_fallback=lambda active: self.events.append(f"fallback {active}"),
            clock=self.clocks.monotonic,
            window_clock=self.clocks.wall,
        )

    async def hit(self, policy: RoutePolicy = NINE_A_MINUTE) -> Verdict:
        return await self.store.hit(KEYS, policy)


async def test_while_redis_answers_every_check_is_its_answer():
    shared = FakeSharedStore()
    harness = Harness(shared)
    assert [await harness.hit() for _ in range(3)] == [SHARED, SHARED, SHARED]
    assert shared.calls == 3
    assert harness.events == []
    assert harness.store.shared is True
    assert harness.store.fallback.counters == {}


async def test_open_mode_divides_the_limit_by_the_replicas_while_redis_fails():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, mode="open", replicas=3)
    verdicts = [await harness.hit() for _ in range(5)]
    assert verdicts == [  # 9 a minute, shared by 3 replicas: 3 here
        Verdict(True, (1,), (60_000,)),
        Verdict(True, (2,), (60_000,)),
        Verdict(True, (3,), (60_000,)),
        Verdict(False, (3,), (60_000,), 60_000),
        Verdict(False, (3,), (60_000,), 60_000),
    ]
    assert shared.calls == 1  # the failure; the rest within the retry interval
    assert harness.events == ["error", "fallback True"]
    assert harness.store.shared is False


async def test_open_mode_divides_each_window_and_keeps_at_least_one():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, mode="open", replicas=4, retry_interval=600.0)
    policy = RoutePolicy("p", "/p", (Window(10, 1), Window(3, 60)))  # shares: 2 and 1
    keys = ["k:1", "k:60"]
    assert await harness.store.hit(keys, policy) == Verdict(True, (1, 1), (1_000, 60_000))
    assert await harness.store.hit(keys, policy) == Verdict(False, (1, 1), (1_000, 60_000), 60_000)
    harness.clocks.at(60_000)
    assert await harness.store.hit(keys, policy) == Verdict(True, (1, 1), (1_000, 60_000))
    assert await harness.store.hit(keys, policy) == Verdict(False, (1, 1), (1_000, 60_000), 60_000)
    harness.clocks.at(61_000)  # a new second, the same minute: the minute's share is spent
    assert await harness.store.hit(keys, policy) == Verdict(False, (0, 1), (1_000, 59_000), 59_000)
    assert shared.calls == 1


async def test_the_fallback_windows_follow_the_window_clock():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, mode="open", replicas=1, retry_interval=600.0)
    ten_seconds = RoutePolicy("p", "/p", (Window(2, 10),))
    harness.clocks.at(7_500)
    assert await harness.hit(ten_seconds) == Verdict(True, (1,), (2_500,))
    assert await harness.hit(ten_seconds) == Verdict(True, (2,), (2_500,))
    harness.clocks.at(9_999)
    assert await harness.hit(ten_seconds) == Verdict(False, (2,), (1,), 1)
    harness.clocks.at(10_000)
    assert await harness.hit(ten_seconds) == Verdict(True, (1,), (10_000,))


@pytest.mark.parametrize(
    ("retry_interval", "retry_after"),
    [(0.25, 1), (1.0, 1), (2.0, 2), (2.3, 3), (2.6, 3), (30.0, 30)],
)
async def test_closed_mode_refuses_with_retry_after_the_retry_interval(retry_interval, retry_after):
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, mode="closed", retry_interval=retry_interval)
    for _ in range(3):
        with pytest.raises(LimitUnavailable) as refused:
            await harness.hit()
        assert refused.value.retry_after == retry_after
    assert shared.calls == 1
    assert harness.events == ["error", "fallback True"]
    assert harness.store.fallback.counters == {}  # nothing is counted in memory


async def test_redis_is_not_asked_again_within_the_retry_interval():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, retry_interval=2.0)
    await harness.hit()
    assert shared.calls == 1
    for elapsed_ms in (1, 1_000, 1_999):
        harness.clocks.at(elapsed_ms)
        await harness.hit()
    assert shared.calls == 1
    harness.clocks.at(2_000)  # one request tries it; it fails again
    await harness.hit()
    assert shared.calls == 2
    harness.clocks.at(3_999)  # the interval counts from the last failure
    await harness.hit()
    assert shared.calls == 2
    harness.clocks.at(4_000)
    await harness.hit()
    assert shared.calls == 3
    assert harness.events == ["error", "fallback True", "error", "error"]


async def test_a_probe_that_succeeds_returns_to_the_shared_store():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, retry_interval=2.0)
    assert await harness.hit() == Verdict(True, (1,), (60_000,))
    shared.failing = False
    harness.clocks.at(1_999)  # Redis is back, but not asked yet
    assert await harness.hit() == Verdict(True, (2,), (58_001,))
    assert shared.calls == 1
    harness.clocks.at(2_000)
    assert await harness.hit() == SHARED
    assert harness.store.shared is True
    assert await harness.hit() == SHARED
    assert shared.calls == 3
    assert harness.events == ["error", "fallback True", "fallback False"]


async def test_only_one_request_probes_the_others_keep_to_the_fallback():
    shared = FakeSharedStore()
    shared.failing = True
    harness = Harness(shared, mode="open", replicas=3, retry_interval=2.0)
    await harness.hit()
    harness.clocks.at(2_000)
    shared.failing = False
    shared.gate = asyncio.Event()
    probe = asyncio.create_task(harness.hit())
    await asyncio.sleep(0)  # the probe is now waiting on the shared store
    assert shared.calls == 2
    assert harness.store.probing is True
    # Meanwhile: the fallback's share, Redis not asked (a check sent to it would wait).
    assert await asyncio.wait_for(harness.hit(), 1) == Verdict(True, (2,), (58_000,))
    assert await asyncio.wait_for(harness.hit(), 1) == Verdict(True, (3,), (58_000,))
    assert shared.calls == 2
    shared.gate.set()
    assert await probe == SHARED
    assert harness.store.probing is False
    assert harness.store.shared is True
    shared.gate = None
    assert await harness.hit() == SHARED
    assert shared.calls == 3
    assert harness.events == ["error", "fallback True", "fallback False"]


async def test_on_error_counts_failures_on_fallback_marks_each_change(caplog):
    shared = FakeSharedStore()
    harness = Harness(shared, retry_interval=2.0)
    caplog.set_level(logging.WARNING, logger="test.failover")
    await harness.hit()
    assert harness.events == []
    shared.failing = True
    await harness.hit()  # the first failure: error, and the fallback begins
    assert harness.events == ["error", "fallback True"]
    harness.clocks.at(1_000)
    await harness.hit()  # not asked: nothing happens
    assert harness.events == ["error", "fallback True"]
    harness.clocks.at(2_000)
    await harness.hit()  # a failed probe: an error, the fallback goes on
    assert harness.events == ["error", "fallback True", "error"]
    shared.failing = False
    harness.clocks.at(4_500)
    await harness.hit()  # a probe that succeeds: the fallback ends
    await harness.hit()
    assert harness.events == ["error", "fallback True", "error", "fallback False"]
    shared.failing = True
    await harness.hit()  # down again: a new fallback
    assert harness.events == [
        "error",
        "fallback True",
        "error",
        "fallback False",
        "error",
        "fallback True",
    ]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            "rate-limit storage unavailable, mode open: ConnectionError: connection refused",
        ),
        ("WARNING", "rate-limit storage back after 4.5 s"),
        (
            "ERROR",
            "rate-limit storage unavailable, mode open: ConnectionError: connection refused",
        ),
    ]


async def test_without_redis_the_memory_store_counts_the_whole_limit():
    harness = Harness(None, mode="closed", replicas=3)
    two_a_minute = RoutePolicy("p", "/p", (Window(2, 60),))
    verdicts = [await harness.hit(two_a_minute) for _ in range(3)]
    assert verdicts == [
        Verdict(True, (1,), (60_000,)),
        Verdict(True, (2,), (60_000,)),
        Verdict(False, (2,), (60_000,), 60_000),
    ]
    assert harness.events == []
    assert harness.store.shared is False


def test_the_default_clocks_are_the_real_ones():
    store = FailoverStore(
        None, mode="open", replicas=1, retry_interval=1.0, logger=logging.getLogger("t")
    )
    assert store.clock is time.monotonic
    assert store.fallback.clock is time.time
