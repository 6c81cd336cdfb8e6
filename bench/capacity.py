"""``python -m bench.capacity``: CPU per admitted request, in the service and in Redis,
and what that means for a deployment: API replicas and Redis primaries per target rate.

One gatehouse process (one uvicorn worker) and one redis-server, a short load
(``bench.load.run_load``: wrk when installed) on ``GET /search`` with a limit never
reached, so every request pays for a full check. Measured per request, from deltas
around the load:

- the service's CPU: its own process's utime + stime (``/proc/<pid>/stat``);
- Redis's CPU: ``INFO cpu`` used_cpu_sys + used_cpu_user;
- Redis's time inside the script: ``INFO commandstats`` usec_per_call of EVALSHA.

Twice: with the pipelined client (``redis://``, ``rediss://``: checks of one loop tick
share a write) and with redis-py (what Sentinel and Cluster use: one command per
check). Writes ``capacity.md`` and ``capacity.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from tests.helpers import ApiServer, RedisServer, wait_until

from bench.load import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent
SEARCH = "/search?q=x"
NEVER_REACHED = "1000000000/minute"
TARGETS = (1_000, 5_000, 20_000, 100_000)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measure:
    client: str
    requests: int
    rps: float
    errors: int
    api_cpu_ms: float  # service CPU per request
    redis_cpu_us: float  # Redis CPU per request
    evalsha_us: float  # Redis's time inside the script per call
    script_calls: float  # script calls per request

    def per_replica(self, budget: float) -> float:
        """Requests per second one API replica serves at ``budget`` cores."""
        return budget / (self.api_cpu_ms / 1000)

    def per_primary(self, budget: float) -> float:
        """Requests per second one Redis primary checks at ``budget`` of its core."""
        return budget / (self.redis_cpu_us / 1_000_000)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def redis_cpu_seconds(redis: RedisServer) -> float:
    info = redis.client().info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure(client: str, duration: float, connections: int, log_dir: Path) -> Measure:
    redis = RedisServer()
    redis.start()
    server = ApiServer(
        {
            "APP_REDIS_URL": redis.url,
            "APP_REDIS_CLIENT": client,
            "APP_RATE_LIMIT_SEARCH": NEVER_REACHED,
            "APP_RATE_LIMIT_DEFAULT": NEVER_REACHED,
            "APP_TRUSTED_HOSTS": "localhost,127.0.0.1",
            "APP_ALLOWED_ORIGINS": "http://localhost:5173",
            "APP_LOG_LEVEL": "warning",
        }
    )
    try:
        server.start(log_dir=log_dir)
        assert server.process is not None
        wait_until(
            lambda: httpx.get(f"{server.url}{SEARCH}", timeout=2).status_code == 200,
            what="first check",
        )
        run_load("127.0.0.1", server.port, SEARCH, connections=connections, duration=1)
        stats = redis.client()
        stats.config_resetstat()
        api_before = process_cpu_seconds(server.process.pid)
        redis_before = redis_cpu_seconds(redis)
        result: LoadResult = run_load(
            "127.0.0.1", server.port, SEARCH, connections=connections, duration=duration
        )
        api_cpu = process_cpu_seconds(server.process.pid) - api_before
        redis_cpu = redis_cpu_seconds(redis) - redis_before
        commands = stats.info("commandstats")
    finally:
        server.stop()
        redis.stop()
    evalsha = commands.get("cmdstat_evalsha", {"calls": 0, "usec_per_call": 0.0})
    requests = max(result.requests, 1)
    return Measure(
        client=client,
        requests=result.requests,
        rps=result.rps,
        errors=result.errors,
        api_cpu_ms=api_cpu / requests * 1000,
        redis_cpu_us=redis_cpu / requests * 1_000_000,
        evalsha_us=float(evalsha["usec_per_call"]),
        script_calls=evalsha["calls"] / requests,
    )


def plan(measures: dict[str, Measure], budget: float) -> list[dict[str, object]]:
    """Per target: replicas, and primaries for one Redis (pipelined) and for a Cluster."""
    pipelined, redispy = measures["pipelined"], measures["redis-py"]
    rows = []
    for target in TARGETS:
        replicas = math.ceil(target / pipelined.per_replica(budget))
        one_redis_ok = target <= pipelined.per_primary(budget)
        cluster_replicas = math.ceil(target / redispy.per_replica(budget))
        primaries = math.ceil(target / redispy.per_primary(budget))
        rows.append(
            {
                "target": target,
                "replicas": replicas,
                "one_redis": one_redis_ok,
                "cluster_replicas": cluster_replicas,
                "primaries": primaries,
            }
        )
    return rows


def render_markdown(
    measures: dict[str, Measure], rows: list[dict[str, object]], budget: float
) -> str:
    pipelined, redispy = measures["pipelined"], measures["redis-py"]
    one_redis_ceiling = pipelined.per_primary(budget)
    first = "the API replicas" if pipelined.per_replica(budget) < one_redis_ceiling else "Redis"
    ratio = one_redis_ceiling / pipelined.per_replica(budget)
    lines = [
        "# Capacity: API replicas and Redis primaries per request rate",
        "",
        "## Operations: one Redis, Sentinel or Cluster",
        "",
        f"Measured here (one uvicorn worker; budgets: {budget:.0%} of one core per API replica "
        f"and per Redis primary): a check costs the service {pipelined.api_cpu_ms:.3f} ms of CPU "
        f"and Redis {pipelined.redis_cpu_us:.1f} us with the pipelined client "
        f"(`redis://`, `rediss://`), {redispy.redis_cpu_us:.1f} us through redis-py (what "
        f"Sentinel and Cluster use: one command per check, no shared writes). The script "
        f"itself runs {pipelined.evalsha_us:.1f} us inside Redis. So one replica serves about "
        f"{pipelined.per_replica(budget):,.0f} req/s and one Redis checks about "
        f"{one_redis_ceiling:,.0f} req/s: the first bottleneck is {first}, and one Redis "
        f"keeps up with about {ratio:.0f} replicas.",
        "",
        "- **One Redis** (the chart's own, or an external `redis://` / `rediss://`): up to "
        f"about {one_redis_ceiling:,.0f} req/s across the deployment. Its outage is handled "
        "by the failure mode (`open`: each replica counts its share; `closed`: 503), so a "
        "single Redis is right while a few seconds of local counting or refusals after a "
        "node loss are acceptable.",
        "- **Sentinel** (`redis+sentinel://host:port,.../<primary>`) when that is not "
        "acceptable: it buys availability, not throughput (one primary takes every write, "
        f"and redis-py costs Redis {redispy.redis_cpu_us / pipelined.redis_cpu_us:.1f}x the "
        "CPU per check of the pipelined client). Measured in tests/topologies: the replica "
        "is promoted about 2.3 s after the primary dies (down-after-milliseconds 1000) and "
        "the service is back on the shared count with it.",
        "- **Cluster** (`redis+cluster://host:port,...`) when one primary's core is the "
        f"limit: past about {redispy.per_primary(budget):,.0f} req/s per primary through "
        "redis-py. Each client's windows share one hash slot (the client is the hash tag), "
        "so a check stays one call on one primary, and (tests/topologies) 1,000 client "
        "addresses spread 332/333/335 over three primaries: capacity grows with the "
        "primaries. A primary lost is replaced by its replica in about 5 s "
        "(cluster-node-timeout 1000 ms; the failure mode covers the gap, for the clients "
        "of that primary's slots), and resharding under load keeps the limit exact. Give "
        "every primary a replica: that doubles the Redis processes, not the capacity.",
        "",
        "## Measured",
        "",
        "| client | requests | req/s | errors | service CPU / request | Redis CPU / request "
        "| EVALSHA usec_per_call | script calls / request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in measures.values():
        lines.append(
            f"| {m.client} | {m.requests} | {m.rps:,.0f} | {m.errors} | {m.api_cpu_ms:.3f} ms "
            f"| {m.redis_cpu_us:.1f} us | {m.evalsha_us:.1f} us | {m.script_calls:.2f} |"
        )
    lines += [
        "",
        f"## Sizing at {budget:.0%} of one core per replica and per primary",
        "",
        f"One API replica: {pipelined.per_replica(budget):,.0f} req/s (pipelined), "
        f"{redispy.per_replica(budget):,.0f} req/s (redis-py). One Redis primary: "
        f"{pipelined.per_primary(budget):,.0f} req/s (pipelined), "
        f"{redispy.per_primary(budget):,.0f} req/s (redis-py).",
        "",
        "| target req/s | API replicas (one Redis) | one Redis enough? | API replicas "
        "(Sentinel/Cluster, redis-py) | Redis primaries (Cluster) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['target']:,} | {row['replicas']} | {'yes' if row['one_redis'] else 'no'} "
            f"| {row['cluster_replicas']} | {row['primaries']} |"
        )
    lines += [
        "",
        "Method: `python -m bench.capacity` (bench/capacity.py). CPU from deltas around "
        "one load run: the uvicorn process's utime + stime from /proc, Redis's INFO cpu; "
        "the load generator and Redis share the machine's cores with the service, which "
        "changes throughput but not CPU per request much. Replicas of one worker each; "
        "the redis-py figures stand for a Cluster node (the same one command per check, "
        "plus slot routing in the client). Not modelled: network round trips between "
        "nodes, TLS (adds CPU on both sides), replication's own CPU on each primary.",
        "",
        "![capacity](capacity.png)",
        "",
    ]
    return "\n".join(lines)


def render_png(rows: list[dict[str, object]], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [int(str(row["target"])) for row in rows]
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(targets, [row["replicas"] for row in rows], "o-", label="API replicas (pipelined)")
    axis.plot(
        targets,
        [row["cluster_replicas"] for row in rows],
        "s--",
        label="API replicas (redis-py: Sentinel/Cluster)",
    )
    axis.plot(targets, [row["primaries"] for row in rows], "^-", label="Redis primaries")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("target requests per second (deployment)")
    axis.set_ylabel(f"processes at {budget:.0%} of a core")
    axis.set_title("Gatehouse capacity model (measured CPU per request)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per client")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--budget", type=float, default=0.7, help="cores per replica/primary")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    measures: dict[str, Measure] = {}
    for client in ("pipelined", "redis-py"):
        started = time.monotonic()
        measures[client] = measure(client, args.duration, args.connections, args.out)
        print(
            f"capacity: {client}: {measures[client]} ({time.monotonic() - started:.1f} s)",
            file=sys.stderr,
        )
    rows = plan(measures, args.budget)
    (args.out / "capacity.md").write_text(render_markdown(measures, rows, args.budget))
    render_png(rows, args.out / "capacity.png", args.budget)
    for log in args.out.glob("gatehouse-127.0.0.1-*.log"):
        log.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
