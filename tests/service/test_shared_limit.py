"""The limit holds for the deployment: three replicas, one Redis."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from gatehouse.ratelimit.peers import PEERS_KEY
from tests.helpers import stored_hits, wait_until

# Commands are counted below: the peer registry's heartbeat runs once at start-up
# (awaited before counting), the next one a minute later.
ONE_HEARTBEAT = {"APP_PEER_HEARTBEAT_INTERVAL": "60"}


async def burst(
    urls: list[str], total: int, path: str, headers: dict[str, str] | None = None
) -> Counter[int]:
    """``total`` requests at once, spread round-robin over ``urls``."""
    limits = httpx.Limits(max_connections=total)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        responses = await asyncio.gather(
            *(client.get(f"{urls[i % len(urls)]}{path}", headers=headers) for i in range(total))
        )
    return Counter(response.status_code for response in responses)


def test_three_replicas_admit_exactly_the_limit(api_server, redis_db, fresh_minute):
    env = {"APP_REDIS_URL": redis_db.url, "APP_RATE_LIMIT_SEARCH": "10/minute", "APP_REPLICAS": "3"}
    replicas = [api_server(env) for _ in range(3)]
    statuses = asyncio.run(burst([r.url for r in replicas], 100, "/search?q=x"))
    assert statuses == {200: 10, 429: 90}
    # One key per client, route and window, holding the shared count.
    keys = redis_db.client().keys("gatehouse:*")
    assert len(keys) == 1
    assert stored_hits(redis_db.client(), keys[0]) == 10


def test_one_redis_call_per_limited_request(api_server, redis_db):
    server = api_server(
        {
            "APP_REDIS_URL": redis_db.url,
            "APP_RATE_LIMIT_SEARCH": "1000/minute;5000/hour",
            **ONE_HEARTBEAT,
        }
    )
    client = redis_db.client()
    wait_until(lambda: client.zcard(PEERS_KEY) == 1, what="the start-up heartbeat")
    # The first request opens the connection and loads the script; count after it.
    assert httpx.get(f"{server.url}/search?q=x").status_code == 200
    client.config_resetstat()
    for _ in range(20):
        assert httpx.get(f"{server.url}/search?q=x").status_code == 200
    stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 20
    other = {
        name: value["calls"]
        for name, value in stats.items()
        if name not in ("cmdstat_evalsha", "cmdstat_info") and not name.startswith("cmdstat_config")
    }
    # Commands run inside the scripts are counted too; nothing else was sent. (The
    # default algorithm: a sliding log for 1000/minute, the two counters for 5000/hour.)
    assert set(other) <= {
        f"cmdstat_{command}"
        for command in (
            *("time", "lindex", "rpop", "llen", "lpush", "pexpire"),  # the log
            *("hget", "hincrby", "hdel"),  # the counters
        )
    }


def test_preflights_and_probes_send_nothing_to_redis(api_server, redis_db):
    server = api_server({"APP_REDIS_URL": redis_db.url, **ONE_HEARTBEAT})
    client = redis_db.client()
    wait_until(lambda: client.zcard(PEERS_KEY) == 1, what="the start-up heartbeat")
    client.config_resetstat()
    for _ in range(10):
        httpx.options(
            f"{server.url}/items",
            headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
        )
        httpx.get(f"{server.url}/healthz")
    stats = client.info("commandstats")
    assert not any(
        name.startswith(("cmdstat_eval", "cmdstat_get", "cmdstat_incr")) for name in stats
    )


def test_redis_with_a_password(api_server, tmp_path, fresh_minute):
    import shutil

    import pytest

    from tests.helpers import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(password="s3cret-pw")
    redis.start()
    try:
        server = api_server(
            {
                "APP_REDIS_URL": redis.url,
                "APP_REDIS_PASSWORD": "s3cret-pw",
                "APP_RATE_LIMIT_SEARCH": "2/minute",
            }
        )
        statuses = [httpx.get(f"{server.url}/search?q=x").status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert httpx.get(f"{server.url}/readyz").json()["redis"] == "ok"
    finally:
        redis.stop()
