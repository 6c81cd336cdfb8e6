"""The shared limit behind Redis Sentinel: one primary, one replica, three sentinels.

The primary is killed (SIGKILL) under a bounded load. While no primary answers, the
failure mode decides (``open``: local shares of the limit; ``closed``: 503); after
the sentinels promote the replica, the replicas are back on the shared count. No
500, no request waiting past the Redis timeout in either mode.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from tests.helpers import wait_for_fresh_window
from tests.topologies.conftest import PASSWORD
from tests.topologies.load import (
    LoadRun,
    back_after,
    burst,
    paced_load,
    redis_key,
    server_durations,
    watch_shared_count,
)
from tests.topologies.servers import SentinelSet

REDIS_TIMEOUT = 0.25
SERVER_CEILING_MS = REDIS_TIMEOUT * 1000 + 150


def sentinel_env(sentinels: SentinelSet, **extra: str) -> dict[str, str]:
    # The data nodes' password from APP_REDIS_PASSWORD; the sentinels take none.
    return {
        "APP_REDIS_URL": sentinels.url,
        "APP_REDIS_PASSWORD": PASSWORD,
        "APP_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
        "APP_REPLICAS": "2",
        **extra,
    }


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_primary_killed_under_load(sentinel_set, api_server, mode, report_figure):
    clients = ["alice", "bob", "carol"]
    wait_for_fresh_window(60, needed=25)
    replicas = [
        api_server(
            sentinel_env(
                sentinel_set,
                APP_RATE_LIMIT_SEARCH="100000/minute",
                APP_RATE_LIMIT_ALGORITHM="fixed",  # the count read from Redis: one integer
                APP_RATE_LIMIT_FAILURE_MODE=mode,
                APP_REDIS_RETRY_INTERVAL="0.3",
                APP_ACCESS_LOG="true",
            )
        )
        for _ in range(2)
    ]
    # Exact on the shared count before anything fails.
    exact = asyncio.run(burst([r.url for r in replicas], ["exact"], 1))
    assert exact == {"exact": Counter({200: 1})}

    keys = [redis_key(name, window="100000/60") for name in clients]

    def shared_count() -> int:
        try:
            client = sentinel_set.current_primary().client()
            return sum(int(client.get(key) or 0) for key in keys)
        except Exception:
            return -1

    run = LoadRun()
    marks: dict[str, float] = {}

    async def scenario() -> None:
        stop_at = time.monotonic() + 9.0
        load = asyncio.create_task(
            paced_load([r.url for r in replicas], clients, run, stop_at, pause=0.005)
        )
        await asyncio.sleep(1.0)
        old = sentinel_set.current_primary()
        marks["killed"] = time.monotonic()
        await asyncio.to_thread(old.kill)
        promotion = asyncio.create_task(asyncio.to_thread(sentinel_set.wait_promoted, old, 8.0))
        shared = await watch_shared_count(shared_count, marks["killed"], stop_at)
        marks["promoted"] = marks["killed"] + await promotion
        if shared is not None:
            marks["shared"] = shared
        await load

    asyncio.run(scenario())
    for replica in replicas:
        replica.stop()
    durations = server_durations(replicas)
    outages = back_after(replicas)

    assert "shared" in marks, "never back on the shared count after the promotion"
    recovered = marks["shared"] - marks["killed"]
    before = run.statuses(until=marks["killed"])
    during = run.statuses(marks["killed"], marks["shared"])
    after = run.statuses(since=marks["shared"])
    report_figure(
        f"sentinel primary SIGKILL, mode {mode:6s}: promoted {marks['promoted'] - marks['killed']:.2f} s "
        f"after the kill (down-after 1 s); replicas back on the shared count after "
        f"{max(outages, default=0):.1f} s at most ({len(outages)} outages in their logs; seen from outside {recovered:.2f} s); "
        f"requests before {dict(before)}, without a primary {dict(during)}, after {dict(after)}; "
        f"client worst {run.worst_ms():.0f} ms, server-side worst {max(durations):.0f} ms"
    )
    # Open: served throughout. Closed: refused (503) while no primary answered.
    expected = {200} if mode == "open" else {200, 503}
    assert set(run.statuses()) == expected, run.statuses()
    if mode == "closed":
        assert during[503] > 0, "mode closed refused nothing while no primary answered"
    else:
        assert during[200] > 0
    assert before[200] > 0 and after[200] > 0
    # Every replica has probed its way back within a second of the first one.
    settled = run.statuses(since=marks["shared"] + 1.0)
    assert settled[200] > 0 and set(settled) == {200}, settled
    assert set(run.health) == {200}
    assert len(durations) >= len(run.samples)
    assert max(durations) < SERVER_CEILING_MS, f"a request waited {max(durations):.0f} ms"
    assert recovered < 8.0
