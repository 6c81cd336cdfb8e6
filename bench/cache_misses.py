"""Cache misses per request beside instructions: the CPU time an instruction count misses.

    python -m bench.cache_misses            # -> bench/results/cache_misses.md

The same counting worker as ``bench.profile`` (each server's HTTP protocol on in-memory
transports, 32 connections, real Redis replies), under valgrind's cachegrind with its
cache simulation on: instructions, first-level instruction and data cache misses and
last-level misses, per request, as the difference of a long and a short run. Servers:
bare FastAPI, the floor, Gatehouse on Redis compiled (as the image runs it) and from
source, and on the memory store compiled.

Why: Gatehouse runs about 5% more instructions than the floor but costs about 10% more
CPU under wrk; misses are the rest (README, "Benchmarks"). The simulated caches take the
host's sizes; the counts do not drift with the VM's speed. Minutes: valgrind runs each
server twice, two at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import RedisServer, compiled_build

from bench.run import ROOT, counting_env, running_build

EVENTS = {
    "I refs": "instructions",
    "I1 misses": "L1 instruction misses",
    "D1 misses": "L1 data misses",
    "LL misses": "last-level misses",
}
CONNECTIONS = 32  # bench.profile's worker


def parse_totals(stderr: str) -> dict[str, int]:
    """cachegrind's summary lines (``==PID== I1  misses:   13,200``) as numbers by event."""
    totals: dict[str, int] = {}
    for line in stderr.splitlines():
        match = re.match(r"==\d+== ([A-Za-z0-9 ]+?):\s+([\d,]+)", line)
        if match:
            event = re.sub(r"\s+", " ", match.group(1))
            if event in EVENTS:
                totals[event] = int(match.group(2).replace(",", ""))
    return totals


def run_worker(config: str, rounds: int, env: dict[str, str]) -> dict[str, int]:
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "bench.profile", "--worker", config, str(rounds),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    totals = parse_totals(done.stderr)
    if done.returncode != 0 or set(totals) != set(EVENTS):
        raise RuntimeError(f"worker {config} failed: {done.stderr.strip()[-500:]}")
    return totals


def per_request(config: str, env: dict[str, str], long: int, short: int) -> dict[str, float]:
    """Each event per request: a long run minus a short one, so start-up cancels out."""
    long_run, short_run = run_worker(config, long, env), run_worker(config, short, env)
    requests = (long - short) * CONNECTIONS
    return {event: (long_run[event] - short_run[event]) / requests for event in EVENTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="requests a connection, long run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    short = max(2, args.rounds // 6)
    redis = RedisServer()
    redis.start()
    try:
        env = counting_env(redis.url)
        compiled = running_build(env, compiled_build())
        memory = {k: v for k, v in compiled.items() if k != "APP_REDIS_URL"}
        servers = {
            "bare": ("bare", env),
            "floor": ("floor", env),
            "gatehouse-redis (compiled)": ("gatehouse", compiled),
            "gatehouse-redis (sources)": ("gatehouse", env),
            "gatehouse-memory (compiled)": ("gatehouse", memory),
        }
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            counts = dict(
                zip(
                    servers,
                    pool.map(
                        lambda s: per_request(s[0], s[1], args.rounds, short), servers.values()
                    ),
                    strict=True,
                )
            )
    finally:
        redis.stop()
    floor = counts["floor"]
    lines = [
        "# Cache misses per request",
        "",
        f"`python -m bench.cache_misses`: cachegrind's simulated caches, bench.profile's worker, "
        f"{args.rounds} minus {short} requests on each of {CONNECTIONS} connections.",
        "",
        "| server | " + " | ".join(EVENTS.values()) + " |",
        "|---|" + "---:|" * len(EVENTS),
    ]
    for name, events in counts.items():
        cells = [
            # Last-level misses are well under one a request: two decimals, no ratio.
            f"{events[e]:,.0f} ({events[e] / floor[e]:.3f}x)"
            if floor[e] >= 100
            else f"{events[e]:.2f}"
            for e in EVENTS
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios are to the floor's.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_misses.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
