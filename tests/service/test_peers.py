"""The peer registry on a real Redis: the script, then real replicas learning their count.

Heartbeats every 0.3 s here (APP_PEER_HEARTBEAT_INTERVAL), so a silent replica is
dropped after 0.9 s; every wait below polls with a bounded deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from gatehouse.ratelimit.peers import LEAVE, PEERS_KEY, PEERS_SCRIPT, REGISTER
from gatehouse.ratelimit.pipeline import PipelinedRedis
from gatehouse.ratelimit.redis_store import PipelinedRunner, RedisPyRunner, ScriptRunner
from tests.helpers import ApiServer, RedisServer, stored_hits, wait_for_fresh_window, wait_until

HEARTBEAT = {"APP_PEER_HEARTBEAT_INTERVAL": "0.3"}
HEARTBEAT_ERRORS = "gatehouse_ratelimit_peer_heartbeat_errors_total"

RUNNERS: dict[str, Callable[[str], ScriptRunner]] = {
    "pipelined": lambda url: PipelinedRunner(PipelinedRedis.from_url(url, None, 1.0)),
    "redis-py": lambda url: RedisPyRunner.from_url(url, None, 1.0),
}


def metric(server: ApiServer, name: str) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in {server.url}/metrics")


def peers(server: ApiServer) -> int:
    count = httpx.get(f"{server.url}/readyz", timeout=5).json()["peers"]
    assert isinstance(count, int)
    return count


def knows(server: ApiServer, count: int) -> bool:
    """/readyz and the gauge both report ``count`` (read one after the other)."""
    return peers(server) == count and metric(server, "gatehouse_ratelimit_peers") == count


def wait_for_peers(servers: list[ApiServer], count: int) -> None:
    wait_until(
        lambda: all(knows(server, count) for server in servers),
        timeout=15,
        interval=0.1,
        what=f"{len(servers)} replicas to learn {count} peers",
    )


def statuses(server: ApiServer, count: int) -> list[int]:
    return [httpx.get(f"{server.url}/search?q=x", timeout=5).status_code for _ in range(count)]


@pytest.mark.parametrize("client", list(RUNNERS))
def test_the_script_registers_expires_by_redis_time_and_leaves(redis_db: RedisServer, client):
    ttl_ms = 900
    direct = redis_db.client()

    async def scenario() -> list[int]:
        runner = RUNNERS[client](redis_db.url)
        call = runner.script(PEERS_SCRIPT)
        try:
            counts = [await call([PEERS_KEY], (11, ttl_ms, REGISTER))]
            counts.append(await call([PEERS_KEY], (22, ttl_ms, REGISTER)))
            counts.append(await call([PEERS_KEY], (11, ttl_ms, REGISTER)))  # again: one member
            # A member last seen more than the TTL ago, by Redis's clock: dropped by the
            # next heartbeat, whoever sends it.
            seconds, micros = direct.time()
            now_ms = seconds * 1000 + micros // 1000
            direct.zadd(PEERS_KEY, {"33": now_ms - ttl_ms - 50, "44": now_ms - ttl_ms + 60_000})
            counts.append(await call([PEERS_KEY], (22, ttl_ms, REGISTER)))
            assert 0 < direct.pttl(PEERS_KEY) <= ttl_ms  # gone with its last member's TTL
            counts.append(await call([PEERS_KEY], (22, ttl_ms, LEAVE)))
            return counts
        finally:
            await runner.close()

    assert asyncio.run(scenario()) == [1, 2, 2, 3, 2]
    assert sorted(direct.zrange(PEERS_KEY, 0, -1)) == [b"11", b"44"]
    assert not direct.keys("gatehouse:*")  # the counters' namespace stays counters only


def test_replicas_learn_their_count_and_the_fallback_divides_by_it(api_server, own_redis):
    env = {
        "APP_REDIS_URL": own_redis.url,
        "APP_RATE_LIMIT_SEARCH": "12/minute",
        "APP_RATE_LIMIT_FAILURE_MODE": "open",
        "APP_REPLICAS": "1",  # the estimate: wrong on purpose
        "APP_REDIS_RETRY_INTERVAL": "30",
        **HEARTBEAT,
    }
    first, second, third = (api_server(env) for _ in range(3))
    wait_for_peers([first, second, third], 3)

    third.kill()  # no shutdown, no goodbye: the others learn it from the TTL
    wait_for_peers([first, second], 2)
    assert own_redis.client().zcard(PEERS_KEY) == 2

    wait_for_fresh_window(60, needed=10)  # the fallback's minute, by the wall clock
    own_redis.kill()
    # 12 a minute over 2 live replicas: 6 each; not 12 (APP_REPLICAS), not 4 (3 started).
    assert statuses(first, 8) == [200] * 6 + [429] * 2
    assert statuses(second, 8) == [200] * 6 + [429] * 2

    # Heartbeats fail meanwhile: counted, and the last count learned holds.
    wait_until(
        lambda: all(metric(server, HEARTBEAT_ERRORS) >= 2 for server in (first, second)),
        timeout=10,
        what="failed heartbeats to be counted",
    )
    for server in (first, second):
        body = httpx.get(f"{server.url}/readyz", timeout=5).json()
        assert (body["redis"], body["rate_limit"], body["peers"]) == ("unavailable", "fallback", 2)


def test_a_failing_heartbeat_breaks_no_request_and_a_stopped_replica_leaves(
    api_server, redis_db, fresh_minute
):
    env = {"APP_REDIS_URL": redis_db.url, "APP_RATE_LIMIT_SEARCH": "3/minute", **HEARTBEAT}
    first, second = api_server(env), api_server(env)
    wait_for_peers([first, second], 2)
    client = redis_db.client()

    # Another type under the registry's key: every heartbeat gets WRONGTYPE from Redis,
    # on the connection the checks use.
    client.set(PEERS_KEY, "not a sorted set")
    wait_until(
        lambda: all(metric(server, HEARTBEAT_ERRORS) >= 2 for server in (first, second)),
        timeout=10,
        what="failed heartbeats to be counted",
    )
    # The checks go on, exact on the shared count; the count learned holds.
    assert statuses(first, 2) + statuses(second, 2) == [200, 200, 200, 429]
    assert [stored_hits(client, key) for key in client.keys("gatehouse:*")] == [3]
    assert peers(first) == peers(second) == 2

    client.delete(PEERS_KEY)
    wait_until(lambda: client.zcard(PEERS_KEY) == 2, timeout=10, what="both to register again")
    second.stop()  # a graceful stop deregisters on its way out
    assert client.zcard(PEERS_KEY) == 1
    wait_for_peers([first], 1)


def test_interval_zero_turns_the_registry_off(api_server, own_redis):
    # The benchmarks' setting: no heartbeat, the fallback divides by APP_REPLICAS as is.
    server = api_server(
        {"APP_REDIS_URL": own_redis.url, "APP_PEER_HEARTBEAT_INTERVAL": "0", "APP_REPLICAS": "4"}
    )
    assert httpx.get(f"{server.url}/search?q=x", timeout=5).status_code == 200
    assert own_redis.client().exists(PEERS_KEY) == 0
    # The divisor stays the estimate: nothing registers to change it.
    assert peers(server) == 4
    assert metric(server, "gatehouse_ratelimit_peers") == 4.0
