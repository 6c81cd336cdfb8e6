"""Gatehouse on uvicorn's HTTP protocol against Gatehouse on its own, alternated.

    python -m bench.protocols [ALTERNATIONS]     # default 12, 2 s each side

The same compiled Gatehouse (memory store) twice, once on ``httptools`` and once on
``gatehouse.server_protocol`` (the request head's limits, the response-head writer),
each on a core of its own, wrk on the others, alternated forwards and backwards. Prints
the server CPU per request of each and the ratio per alternation: what the shipped
protocol costs beside uvicorn's (README, "Benchmarks").
"""

from __future__ import annotations

import os
import statistics
import sys

from tests.helpers import compiled_build

import bench.run as run
from bench.capacity import process_cpu_seconds
from bench.load import run_load

PROTOCOLS = {"uvicorn": "httptools", "gatehouse": run.GATEHOUSE_PROTOCOL}


def main(argv: list[str]) -> int:
    alternations = int(argv[0]) if argv else 12
    server_cpus, rest = run.split_cores()
    os.sched_setaffinity(0, rest)  # wrk, started from here, runs beside the servers
    run.SERVER_CPUS = server_cpus
    build = compiled_build()
    servers: dict[str, run.Server] = {}
    try:
        for name, protocol in PROTOCOLS.items():
            run.GATEHOUSE_PROTOCOL = protocol  # read by Server.start
            server = run.Server(name, run.GATEHOUSE_APP, dict(run.GATEHOUSE_ENV), build=build)
            server.start()
            servers[name] = server
        cpu: dict[str, list[float]] = {name: [] for name in servers}
        for server in servers.values():  # warm-up
            run_load("127.0.0.1", server.port, run.SEARCH, connections=32, duration=1.0)
        for index in range(alternations):
            order = list(servers.values())
            for server in order if index % 2 == 0 else order[::-1]:
                assert server.process is not None and server.process.pid is not None
                before = process_cpu_seconds(server.process.pid)
                load = run_load("127.0.0.1", server.port, run.SEARCH, connections=32, duration=2.0)
                used = process_cpu_seconds(server.process.pid) - before
                cpu[server.name].append(used / load.requests * 1e6)
    finally:
        for server in servers.values():
            server.stop()
    for name, figures in cpu.items():
        print(f"{name}: CPU us/request median {statistics.median(figures):.1f}, "
              f"each {[round(x) for x in figures]}")  # fmt: skip
    ratios = [a / b for a, b in zip(cpu["uvicorn"], cpu["gatehouse"], strict=True)]
    print(f"uvicorn's over Gatehouse's, per alternation: {[round(r, 3) for r in ratios]}, "
          f"median {statistics.median(ratios):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
