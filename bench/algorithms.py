"""``python -m bench.algorithms``: what each rate-limit algorithm costs Redis per check.

One redis-server, the scripts as the service runs them (``PipelinedRunner``), checks from
``--clients`` clients round-robin, each at a steady share of its limit, so every check
reads and writes as it does in production. Per algorithm (interleaved rounds), from
``INFO commandstats`` deltas: the microseconds Redis spends inside the script per call
(``usec_per_call`` of EVALSHA) and its memory per client afterwards (``used_memory``).
Reported as ratios to ``fixed``, measured in the same run. Writes ``algorithms.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import RedisServer

from gatehouse.ratelimit.pipeline import PipelinedRedis
from gatehouse.ratelimit.policy import RoutePolicy, parse_limit
from gatehouse.ratelimit.redis_store import PipelinedRunner, RedisWindowStore

ROOT = Path(__file__).resolve().parent.parent
# (name, algorithm, limit): the small limit is the sliding log's case, the large one its
# two counters'; each client sends about half its limit within the run.
CASES = (
    ("fixed 100/minute", "fixed", "100/minute"),
    ("sliding 100/minute (log)", "sliding", "100/minute"),
    ("gcra 100/minute", "gcra", "100/minute"),
    ("fixed 5000/minute", "fixed", "5000/minute"),
    ("sliding 5000/minute (counters)", "sliding", "5000/minute"),
)


@dataclass
class Sample:
    usec_per_call: float
    bytes_per_client: float


async def run_case(
    redis: RedisServer, algorithm: str, limit: str, clients: int, checks: int
) -> Sample:
    client = redis.client()
    client.flushall()
    client.config_resetstat()
    before = int(client.info("memory")["used_memory"])
    _, windows = parse_limit(limit)
    policy = RoutePolicy("bench", "/bench", windows, algorithm=algorithm)  # type: ignore[arg-type]
    runner = PipelinedRunner(PipelinedRedis("127.0.0.1", redis.port, timeout=5.0))
    store = RedisWindowStore(runner)
    keys = [[f"bench:{{c{n}}}{suffix}" for suffix in policy.key_suffixes] for n in range(clients)]
    try:
        for start in range(0, checks, 200):  # 200 in flight: one loop tick's worth
            batch = [keys[(start + i) % clients] for i in range(min(200, checks - start))]
            replies = await asyncio.gather(*(store.call(k, policy) for k in batch))
            if not all(store.verdict(reply, 0.0).allowed for reply in replies):
                # A refusal costs less than an admission: the figures would flatter.
                raise SystemExit(f"{algorithm} {limit}: a check was refused; fewer --checks")
    finally:
        await runner.close()
    stats = client.info("commandstats")["cmdstat_evalsha"]
    after = int(client.info("memory")["used_memory"])
    return Sample(float(stats["usec_per_call"]), (after - before) / clients)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.algorithms", description=__doc__)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--checks", type=int, default=50_000, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.checks > args.clients * 50:
        parser.error("--checks: at most 50 per client, half the smallest limit")
    redis = RedisServer()
    redis.start()
    samples: dict[str, list[Sample]] = {name: [] for name, _, _ in CASES}
    try:
        for _ in range(args.rounds):  # interleaved: a drift in the machine hits every case
            for name, algorithm, limit in CASES:
                sample = asyncio.run(run_case(redis, algorithm, limit, args.clients, args.checks))
                samples[name].append(sample)
    finally:
        redis.stop()
    median = {
        name: Sample(
            statistics.median(s.usec_per_call for s in found),
            statistics.median(s.bytes_per_client for s in found),
        )
        for name, found in samples.items()
    }
    lines = [
        "# Rate-limit algorithms: Redis's cost per check",
        "",
        f"`python -m bench.algorithms --clients {args.clients} --checks {args.checks} "
        f"--rounds {args.rounds}`: {args.checks} checks per case and round from "
        f"{args.clients} clients (about {args.checks // args.clients} each, half the small "
        "limit), the medians of interleaved rounds; ratios to `fixed` with the same limit.",
        "",
        "| case | µs in Redis per check | x fixed | bytes per client | x fixed |",
        "|---|---|---|---|---|",
    ]
    for name, _, limit in CASES:
        base = median[f"fixed {limit}"]
        got = median[name]
        lines.append(
            f"| {name} | {got.usec_per_call:.2f} | {got.usec_per_call / base.usec_per_call:.2f} "
            f"| {got.bytes_per_client:.0f} | {got.bytes_per_client / base.bytes_per_client:.2f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "algorithms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
