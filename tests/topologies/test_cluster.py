"""The shared limit on a real Redis Cluster: three primaries, one replica each.

Three API replicas share it; each client's windows live in one hash slot (the client
is the hash tag), so a check stays one call, and clients spread over the primaries.
A primary killed under load (its replica promoted) and slots resharded under load:
no 500, no request waiting past the Redis timeout, and the limit stays exact.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from itertools import count

from redis.crc import key_slot

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
from tests.topologies.servers import Cluster

REDIS_TIMEOUT = 0.25
# The service's own measure of a request may pass the Redis timeout only by the work
# around the wait (more processes share these 2 cores here than in tests/faults).
SERVER_CEILING_MS = REDIS_TIMEOUT * 1000 + 150


def cluster_env(cluster: Cluster, **extra: str) -> dict[str, str]:
    # Credentials in the URL here; the Sentinel tests use APP_REDIS_PASSWORD.
    return {
        "APP_REDIS_URL": cluster.url.replace("://", f"://:{PASSWORD}@", 1),
        "APP_REDIS_TIMEOUT": str(REDIS_TIMEOUT),
        "APP_REPLICAS": "3",
        # The tests read the shared counts from Redis: a fixed window's key is its count.
        # (Every algorithm on Cluster: test_algorithms_topologies.py.)
        "APP_RATE_LIMIT_ALGORITHM": "fixed",
        **extra,
    }


def clients_in_slots(first: int, last: int, wanted: int, prefix: str) -> list[str]:
    """Client tokens whose keys fall in slots ``first..last``."""
    found = []
    for number in count():
        name = f"{prefix}-{number}"
        if first <= key_slot(redis_key(name).encode()) <= last:
            found.append(name)
            if len(found) == wanted:
                return found
    raise AssertionError("unreachable")


def test_three_replicas_admit_exactly_the_limit_per_client(cluster, api_server, report_figure):
    wait_for_fresh_window(60, needed=20)
    # Exactness is what Redis answered. 180 requests at once through three replicas on a
    # loaded 2-core box once kept a reply past 0.25 s, and the default open mode admitted
    # that request: an 11th 200, which was the timeout, not the count. Outages have their
    # own tests below; here a generous timeout, and closed mode so an error shows as 503.
    env = cluster_env(
        cluster,
        APP_RATE_LIMIT_SEARCH="10/minute;25/hour",
        APP_REDIS_TIMEOUT="3",
        APP_RATE_LIMIT_FAILURE_MODE="closed",
    )
    replicas = [api_server(env) for _ in range(3)]
    clients = [f"client-{n}" for n in range(6)]
    statuses = asyncio.run(burst([r.url for r in replicas], clients, 30))
    assert statuses == {name: Counter({200: 10, 429: 20}) for name in clients}

    keys = cluster.keys()
    assert len(keys) == 2 * len(clients)
    for name in clients:
        minute, hour = redis_key(name), redis_key(name, window="25/3600")
        assert keys[minute] == 10 and keys[hour] == 10
        # Both windows of one client in one slot: the check is one call on one node.
        assert key_slot(minute.encode()) == key_slot(hour.encode())
    primaries_used = {cluster.primary_of(key_slot(key.encode())) for key in keys}
    report_figure(
        f"cluster exact: 3 replicas, {len(clients)} clients x 30 concurrent, limit 10/minute: "
        f"each client 10 admitted, 20 refused; their keys on {len(primaries_used)} of 3 primaries"
    )

    # How 1,000 client addresses spread over the slots and the primaries.
    owners = Counter()
    slots = set()
    for n in range(1000):
        key = f"gatehouse:{{ip:10.0.{n // 250}.{n % 250 + 1}}}:/search:10/60"
        slot = key_slot(key.encode())
        slots.add(slot)
        owners[cluster.primary_of(slot)] += 1
    shares = sorted(owners.values())
    report_figure(
        f"cluster slot spread: 1,000 client addresses -> {len(slots)} distinct slots; "
        f"per primary {shares} (ideal 333; max/mean {max(shares) / (1000 / 3):.2f})"
    )
    assert len(owners) == 3 and min(shares) > 250


def test_a_primary_killed_under_load(cluster, api_server, report_figure):
    # The watched client lives on the primary that dies; another lives elsewhere.
    victim = cluster.primaries()[0]
    first, last, _ = next(r for r in cluster.slot_ranges() if r[2] == victim)
    doomed = clients_in_slots(first, last, 1, "doomed")[0]
    other_primary = cluster.primaries()[1]
    o_first, o_last, _ = next(r for r in cluster.slot_ranges() if r[2] == other_primary)
    steady = clients_in_slots(o_first, o_last, 1, "steady")[0]
    doomed_key = redis_key(doomed, window="100000/60")
    slot = key_slot(doomed_key.encode())

    env = cluster_env(
        cluster,
        APP_RATE_LIMIT_SEARCH="100000/minute",
        APP_RATE_LIMIT_FAILURE_MODE="open",
        APP_REDIS_RETRY_INTERVAL="0.3",
        APP_ACCESS_LOG="true",
    )
    replicas = [api_server(env) for _ in range(2)]

    def doomed_count() -> int:
        try:
            port = cluster.primary_of(slot)
            return int(cluster.node(port).client().get(doomed_key) or 0)
        except Exception:
            return -1

    run = LoadRun()
    marks: dict[str, float] = {}

    async def scenario() -> None:
        stop_at = time.monotonic() + 7.0
        load = asyncio.create_task(
            paced_load([r.url for r in replicas], [doomed, steady], run, stop_at, pause=0.005)
        )
        await asyncio.sleep(1.0)
        marks["killed"] = time.monotonic()
        await asyncio.to_thread(cluster.node(victim).kill)
        shared = await watch_shared_count(doomed_count, marks["killed"], stop_at)
        if shared is not None:
            marks["shared"] = shared
        await load

    wait_for_fresh_window(60, needed=10)
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
        f"cluster primary SIGKILL, mode open: replicas back on the shared count after "
        f"{max(outages, default=0):.1f} s at most ({len(outages)} outages in their logs; seen from outside "
        f"{recovered:.2f} s after the kill; node timeout 1 s); requests before {dict(before)}, while promoting "
        f"{dict(during)}, after {dict(after)}; client worst {run.worst_ms():.0f} ms, "
        f"server-side worst {max(durations):.0f} ms"
    )
    assert set(run.statuses()) == {200}, run.statuses()
    assert set(run.health) == {200}
    assert len(durations) >= len(run.samples)
    assert max(durations) < SERVER_CEILING_MS, f"a request waited {max(durations):.0f} ms"
    assert recovered < 8.0
    assert after[200] > 0
    # The new primary of the slot is the old one's replica.
    assert cluster.primary_of(slot) != victim


def test_slots_resharded_under_load_keep_the_limit_exact(cluster, api_server, report_figure):
    source, target = cluster.primaries()[0], cluster.primaries()[1]
    first, _, _ = next(r for r in cluster.slot_ranges() if r[2] == source)
    moved = 400  # redis-cli takes the source's lowest slots first
    clients = clients_in_slots(first, first + moved - 1, 4, "moving")
    limit = 40

    replicas = [
        api_server(
            cluster_env(
                cluster,
                APP_RATE_LIMIT_SEARCH=f"{limit}/hour;{limit * 10}/day",
                APP_RATE_LIMIT_FAILURE_MODE="closed",
                APP_ACCESS_LOG="true",
            )
        )
        for _ in range(3)
    ]
    run = LoadRun()
    marks: dict[str, float] = {}

    async def scenario() -> None:
        done = asyncio.Event()
        load = asyncio.create_task(
            paced_load(
                [r.url for r in replicas],
                clients,
                run,
                time.monotonic() + 60,
                connections=4,
                pause=0.01,
                stop=done,
            )
        )
        await asyncio.sleep(0.2)  # some admitted before, the rest of the budget during
        marks["started"] = time.monotonic()
        await asyncio.to_thread(cluster.reshard, source, target, moved)
        marks["done"] = time.monotonic()
        # Go on until every client has been refused once: a fast migration must not end
        # the load before each budget is spent (the 60 s bound above still holds).
        while not load.done() and not all(
            any(s.client == name and s.status == 429 for s in run.samples) for name in clients
        ):
            await asyncio.wait({load}, timeout=0.05)
        done.set()
        await load

    wait_for_fresh_window(3600, needed=60)
    asyncio.run(scenario())
    for replica in replicas:
        replica.stop()
    durations = server_durations(replicas)

    per_client = {
        name: Counter(s.status for s in run.samples if s.client == name) for name in clients
    }
    during = run.statuses(marks["started"], marks["done"])
    report_figure(
        f"cluster reshard of {moved} slots under load: {marks['done'] - marks['started']:.2f} s, "
        f"{sum(during.values())} requests during it {dict(during)}; per client "
        f"{[dict(c) for c in per_client.values()]}; server-side worst {max(durations):.0f} ms"
    )
    for name in clients:
        slot = key_slot(redis_key(name).encode())
        assert cluster.primary_of(slot) == target, "the client's slot did not move"
    for name, statuses in per_client.items():
        assert statuses[200] == limit and set(statuses) == {200, 429}, (name, statuses)
    assert sum(during.values()) > 0, "no request ran during the migration"
    assert max(durations) < SERVER_CEILING_MS
    keys = cluster.keys()
    assert all(keys[redis_key(name, window=f"{limit}/3600")] == limit for name in clients)
