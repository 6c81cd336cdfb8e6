"""PeerRegistry (what count to believe, and when) and FailoverStore dividing by it.

Redis is replaced by a stand-in that answers a scripted list of counts (or fails);
the script itself runs on a real Redis in tests/service/test_peers.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import NoScriptError

from gatehouse.ratelimit.errors import StorageError
from gatehouse.ratelimit.failover import FailoverStore
from gatehouse.ratelimit.peers import (
    LEAVE,
    PEERS_KEY,
    PEERS_SCRIPT,
    REGISTER,
    TTL_HEARTBEATS,
    PeerRegistry,
)
from gatehouse.ratelimit.policy import RoutePolicy, Window
from gatehouse.ratelimit.redis_store import RedisPyRunner
from gatehouse.ratelimit.script import FIXED_SCRIPT, Verdict
from gatehouse.settings import ConfigError, load_settings

pytestmark = pytest.mark.anyio

FAIL = object()  # in a script of replies: this heartbeat fails like an unreachable Redis
TWELVE_A_MINUTE = RoutePolicy("search", "/search", (Window(12, 60),))


class ScriptedRedis:
    """Stands in for the registry's script call: answers ``replies`` in order."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[str], tuple[int, ...]]] = []

    async def __call__(self, keys: Sequence[str], args: Sequence[int]) -> Any:
        self.calls.append((list(keys), tuple(args)))
        reply = self.replies.pop(0)
        if reply is FAIL:
            raise StorageError("RedisUnavailable: connection refused")
        return reply


class Harness:
    def __init__(self, *replies: Any, estimate: int = 1, interval: float = 5.0) -> None:
        self.redis = ScriptedRedis(*replies)
        self.learned: list[int] = []
        self.errors = 0
        self.registry = PeerRegistry(
            self.redis,
            interval=interval,
            estimate=estimate,
            logger=logging.getLogger("test.peers"),
            on_count=self.learned.append,
            on_error=self.count_error,
        )

    def count_error(self) -> None:
        self.errors += 1

    async def beats(self, count: int) -> list[int]:
        """``count`` heartbeats; the count believed after each."""
        believed = []
        for _ in range(count):
            await self.registry.heartbeat()
            believed.append(self.registry.count)
        return believed


async def test_a_rise_is_believed_at_once():
    harness = Harness(3, 5, 5, estimate=2)
    assert harness.registry.count == 2  # the estimate, until Redis answers
    assert await harness.beats(3) == [3, 5, 5]
    assert harness.learned == [3, 5]  # each change once


async def test_a_drop_is_believed_when_two_heartbeats_in_a_row_report_it():
    # 1 then 3: a Redis that came back empty, re-filled by the peers within one interval.
    # 2 then 1: a scale-down seen while stale members expire: the larger of the two.
    harness = Harness(1, 3, 2, 1, 1, 1, estimate=3)
    assert await harness.beats(6) == [3, 3, 3, 2, 2, 1]
    assert harness.learned == [2, 1]


async def test_a_failed_heartbeat_between_two_low_answers_confirms_nothing():
    harness = Harness(1, FAIL, 1, 1, estimate=3)
    assert await harness.beats(4) == [3, 3, 3, 1]


async def test_never_below_one():
    harness = Harness(0, 0, estimate=2)
    assert await harness.beats(2) == [2, 1]
    assert harness.learned == [1]


async def test_a_failing_heartbeat_is_counted_logged_once_and_never_raised(caplog):
    caplog.set_level(logging.INFO, logger="test.peers")
    harness = Harness(4, FAIL, FAIL, FAIL, 4, FAIL, estimate=1)
    results = [await harness.registry.heartbeat() for _ in range(6)]
    assert results == [True, False, False, False, True, False]
    assert harness.errors == 4
    assert harness.registry.count == 4  # the last count learned holds through the outage
    assert harness.learned == [4]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "rate-limit peers: 4 (was 1)"),
        (
            "WARNING",
            "peer heartbeat failed, keeping 4 peers: StorageError: "
            "RedisUnavailable: connection refused",
        ),
        ("INFO", "peer heartbeat answered again: 4 registered"),
        (
            "WARNING",
            "peer heartbeat failed, keeping 4 peers: StorageError: "
            "RedisUnavailable: connection refused",
        ),
    ]


async def test_a_reply_that_is_not_a_count_is_a_failed_heartbeat():
    harness = Harness([b"OK"], None, b"two", 2)
    assert [await harness.registry.heartbeat() for _ in range(4)] == [False, False, False, True]
    assert harness.errors == 3
    assert harness.registry.count == 2


async def test_each_heartbeat_registers_the_same_member_with_three_intervals_to_live():
    harness = Harness(1, 1, interval=0.25)
    await harness.beats(2)
    other = Harness(1)
    await other.beats(1)
    member = harness.registry.member
    ttl_ms = 250 * TTL_HEARTBEATS
    assert harness.redis.calls == [([PEERS_KEY], (member, ttl_ms, REGISTER))] * 2
    assert other.redis.calls[0][1][0] != member  # one id per process


async def test_leave_removes_this_member_and_swallows_a_failure():
    harness = Harness(1, 0, FAIL)
    await harness.registry.heartbeat()
    await harness.registry.leave()
    await harness.registry.leave()  # Redis already gone at shutdown: nothing raised
    member, ttl_ms = harness.registry.member, harness.registry.ttl_ms
    assert harness.redis.calls[1:] == [([PEERS_KEY], (member, ttl_ms, LEAVE))] * 2
    assert harness.errors == 0  # a shutdown is not a failed heartbeat


class StopLoop(Exception):
    pass


async def test_run_heartbeats_every_interval_through_failures():
    redis = ScriptedRedis(2, FAIL, 3)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise StopLoop

    registry = PeerRegistry(
        redis, interval=0.2, estimate=1, logger=logging.getLogger("test.peers"), sleep=sleep
    )
    with pytest.raises(StopLoop):
        await registry.run()
    assert len(redis.calls) == 3  # the failure stopped nothing
    assert pauses == [0.2, 0.2, 0.2]
    assert registry.count == 3


@pytest.mark.parametrize("interval", [0.0, -1.0])
def test_the_interval_must_be_positive(interval):
    with pytest.raises(ValueError, match="positive"):
        PeerRegistry(ScriptedRedis(), interval, 1, logging.getLogger("test.peers"))


async def test_the_fallback_divides_by_the_count_in_force():
    class DownRedis:
        async def hit(self, keys: Sequence[str], policy: RoutePolicy) -> Verdict:
            raise StorageError("RedisUnavailable: connection refused")

    store = FailoverStore(
        DownRedis(),  # type: ignore[arg-type]  # a stand-in for RedisWindowStore
        mode="open",
        replicas=1,
        retry_interval=600.0,
        logger=logging.getLogger("test.peers"),
        window_clock=lambda: 1_800_000_000.0,  # the start of a minute
    )
    harness = Harness(4, 4, 3, estimate=1)
    harness.registry.on_count = store.use_replicas
    await harness.beats(1)
    allowed = [(await store.hit(["k:4"], TWELVE_A_MINUTE)).allowed for _ in range(4)]
    assert allowed == [True, True, True, False]  # 12 / 4 peers
    await harness.beats(2)  # 4, then 3: a drop reported once, not believed
    assert store.replicas == 4
    store.use_replicas(0)
    assert store.replicas == 1


def test_the_heartbeat_interval_setting():
    assert load_settings().peer_heartbeat_interval == 5.0
    assert load_settings(peer_heartbeat_interval=0.2).peer_heartbeat_interval == 0.2
    assert load_settings(peer_heartbeat_interval=0).peer_heartbeat_interval == 0  # off
    for bad in (0.05, -1, 61):
        with pytest.raises(
            ConfigError, match=f"^invalid configuration: APP_PEER_HEARTBEAT_INTERVAL = {bad}: "
        ):
            load_settings(peer_heartbeat_interval=bad)


class ScriptCache:
    """Stands in for redis-py's client: knows a script once EVAL ran it; notes calls."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()
        self.in_flight = 0
        self.log: list[tuple[str, str, int]] = []  # (command, script, calls in flight)

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> int:
        self.in_flight += 1
        try:
            self.log.append(("evalsha", sha[:6], self.in_flight))
            await asyncio.sleep(0)  # a round trip: other calls may start meanwhile
            if sha not in self.loaded:
                raise NoScriptError("NOSCRIPT No matching script.")
            return 1
        finally:
            self.in_flight -= 1

    async def eval(self, source: str, numkeys: int, *keys_and_args: Any) -> int:
        sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self.log.append(("eval", sha[:6], self.in_flight))
        await asyncio.sleep(0)
        self.loaded.add(sha)
        return 1


async def test_the_heartbeat_does_not_let_a_burst_of_checks_skip_the_first_call_gate():
    # The first call of each script goes alone and loads it into Redis; had the
    # heartbeat's first call opened the gate for the check script too, a burst of checks
    # would each pay NOSCRIPT then EVAL (measured: past the timeout over TLS).
    client = ScriptCache()
    runner = RedisPyRunner(client, timeout=5.0)
    heartbeat = runner.script(PEERS_SCRIPT)
    await heartbeat([PEERS_KEY], (1, 15_000, REGISTER))
    check_call = runner.script(FIXED_SCRIPT)
    await asyncio.gather(*(check_call(["k"], (1, 10, 60_000)) for _ in range(4)))
    check = hashlib.sha1(FIXED_SCRIPT.encode(), usedforsecurity=False).hexdigest()[:6]
    peers = hashlib.sha1(PEERS_SCRIPT.encode(), usedforsecurity=False).hexdigest()[:6]
    assert client.log[:4] == [
        ("evalsha", peers, 1),
        ("eval", peers, 0),
        ("evalsha", check, 1),  # the first check, alone
        ("eval", check, 0),
    ]
    # The others found it loaded: no NOSCRIPT, no EVAL.
    assert [(command, script) for command, script, _ in client.log[4:]] == [("evalsha", check)] * 3
