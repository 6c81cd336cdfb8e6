"""``make bench``: bare FastAPI, the floor, a peer stack, the lesson's stack and Gatehouse, in one run.

Every server is a real uvicorn process with one worker serving ``GET /search?q=x``; the
same load generator hits each in turn, round after round (interleaved, so machine
noise hits all alike). Measures, in this order:

1. memory: each server's resident set at idle (after start and a warm-up) and after
   ``--rss-requests`` requests, on fresh processes;
2. throughput: each server saturated (wrk, closed loop), memory and Redis storage;
3. preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``;
4. slow Redis: a proxy adds a delay each way between the servers and their Redis;
5. open loop: latency at a fixed request rate below saturation, measured from each
   request's scheduled send time (``bench.open_loop``), fast and slow Redis;
6. instructions per request under valgrind (``bench.profile``'s in-process worker),
   last, so valgrind's processes take no core from the timed runs.

Writes ``results.md`` (its head: the goals and whether this run met them),
``results.json`` and ``results.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from stack.processes import Process, http_ok
from tests.helpers import RedisServer, Supervised, compiled_build, free_port, temp_dir

from bench.capacity import process_cpu_seconds
from bench.load import LoadResult, run_load
from bench.open_loop import percentile, run_open_loop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SEARCH = "/search?q=x"
ALLOWED_ORIGIN = "http://localhost:5173"
# Never refuse during a benchmark: every request pays for a full check.
BENCH_LIMIT = "1000000/minute"
# The shared library of the compiled build (scripts/build-compiled's group).
COMPILED_RUNTIME = "gatehouse_edge__mypyc"
# Gatehouse as every other path builds it: the application factory.
GATEHOUSE_APP = "gatehouse.service:create_app"
# The HTTP protocol ``python -m gatehouse`` serves with (the request head's size and time
# limits; server_protocol), as the module's class: its defaults are the settings' defaults,
# and what differs in the one ``python -m gatehouse`` makes (the headers of the answers the
# server writes itself, a refusal counter) is off the path of an answered request. With no
# websocket route, Gatehouse serves with ``ws="none"``, as here.
GATEHOUSE_PROTOCOL = "gatehouse.server_protocol:LimitedHttpToolsProtocol"
GATEHOUSE_ENV = {
    # The floor counts one fixed window (bench/apps/floor.py): the same work here.
    "APP_RATE_LIMIT_ALGORITHM": "fixed",
    "APP_RATE_LIMIT_SEARCH": BENCH_LIMIT,
    "APP_RATE_LIMIT_DEFAULT": BENCH_LIMIT,
    "APP_TRUSTED_HOSTS": "localhost,127.0.0.1",
    "APP_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
    "APP_ACCESS_LOG": "false",
    "APP_LOG_LEVEL": "warning",
    # No peer registry: its heartbeat (one script call per process every 5 s) is background
    # work, and the table counts Redis commands per request.
    "APP_PEER_HEARTBEAT_INTERVAL": "0",
}


# With --pin: the core the server under load runs on (the last one), the others for
# everything else. Set by main.
SERVER_CPUS: set[int] = set()


def split_cores() -> tuple[set[int], set[int]]:
    """(the server's core, the rest): the last core the bench may use, and the others."""
    cores = sorted(os.sched_getaffinity(0))
    return {cores[-1]}, set(cores[:-1])


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process ``pid`` onto ``cpus``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(task.name), cpus)


def running_build(env: dict[str, str], build: Path) -> dict[str, str]:
    """``env`` with the compiled ``build`` first on the path: its extensions shadow the sources."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(build), env.get("PYTHONPATH")]))}


@dataclass
class Server(Supervised):
    name: str
    app: str
    env: dict[str, str]
    redis: RedisServer | None = None
    # The compiled build to run (``make compiled``), or None for the sources.
    build: Path | None = None
    port: int = field(default_factory=free_port)
    process: Process | None = None
    startup_s: float = 0.0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "BENCH_"))}
        env.update(self.env)
        if self.build is not None:
            env = running_build(env, self.build)
        argv = [
            PYTHON,
            "-m",
            "uvicorn",
            self.app,
            # An app named create_app is a factory: Gatehouse's (or a variant of it), served
            # on its own protocol, as the image serves it.
            *(
                ["--factory", "--http", GATEHOUSE_PROTOCOL, "--ws", "none"]
                if self.app.endswith(":create_app")
                else []
            ),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
            "--no-server-header",
        ]
        log_path = temp_dir() / f"bench-{self.name}-{self.port}.log"
        started = time.monotonic()
        self.launch(
            Process(self.name, argv, env, cwd=ROOT, log_path=log_path),
            lambda: http_ok("127.0.0.1", self.port, "/readyz"),
            "/readyz ready",
            timeout=30,
            interval=0.01,
        )
        self.startup_s = time.monotonic() - started
        if self.build is not None and not self.runs_compiled():
            raise RuntimeError(f"{self.name} did not load the compiled build {self.build}")
        if SERVER_CPUS:
            pin(self.process.pid, SERVER_CPUS)

    def runs_compiled(self) -> bool:
        """Whether the worker mapped the compiled build's runtime: proof, not intent."""
        assert self.process is not None and self.process.pid is not None
        maps = Path(f"/proc/{self.process.pid}/maps").read_text()
        return COMPILED_RUNTIME in maps and str(self.build) in maps

    def _status_mb(self, field_name: str) -> float:
        assert self.process is not None and self.process.pid is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def peak_rss_mb(self) -> float:
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        """The worker's resident set now (uvicorn with one worker serves in-process)."""
        return self._status_mb("VmRSS")


@dataclass
class Row:
    scenario: str
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    ratio: float
    cpu_us: float  # the server's own CPU (user + kernel) per answered request
    cpu_ratio: float  # bare's CPU per request over this one's: throughput when CPU-bound
    redis_commands: float | None  # every command Redis ran, per request, scripts' included
    script_calls: float | None  # EVALSHA/EVAL per request
    round_trips: float | None  # client writes to Redis per request (slow-Redis proxy only)
    errors: int
    peak_rss_mb: float
    startup_s: float
    generator: str
    round_rps: list[float]  # each round's req/s, in round order: ratios pair rounds


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of one server's req/s over another's in the same round.

    Both ran within seconds of each other, so a drift of the machine's speed between
    rounds cancels out of each round's ratio.
    """
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True) if b]
    return statistics.median(ratios) if ratios else 0.0


def command_stats(server: RedisServer | None) -> dict[str, int]:
    if server is None:
        return {}
    stats = server.client().info("commandstats")
    return {name: value["calls"] for name, value in stats.items()}


def delta(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    # The benchmark's own connections (stats, flushes) are not the servers' work.
    ignored = (
        "cmdstat_info",
        "cmdstat_config",
        "cmdstat_hello",
        "cmdstat_client",
        "cmdstat_flushall",
    )
    total = sum(after[name] - before.get(name, 0) for name in after if not name.startswith(ignored))
    scripts = sum(
        after.get(name, 0) - before.get(name, 0) for name in ("cmdstat_evalsha", "cmdstat_eval")
    )
    return total, scripts


class DelayProxy(Supervised):
    """bench.delay_proxy: it says ``ready``, and ``writes=<n>`` on SIGUSR1, in its log."""

    def __init__(self, target_port: int, delay_ms: float) -> None:
        self.port = free_port()
        argv = [PYTHON, "-m", "bench.delay_proxy", str(self.port), str(target_port), str(delay_ms)]
        log_path = temp_dir() / f"bench-delay-proxy-{self.port}.log"
        process = Process(f"delay proxy on port {self.port}", argv, cwd=ROOT, log_path=log_path)
        self.launch(process, lambda: "ready" in process.log().splitlines(), "ready")

    def reports(self) -> list[int]:
        """Every ``writes=<n>`` it has logged, in order."""
        assert self.process is not None
        lines = self.process.log().splitlines()
        return [int(line.removeprefix("writes=")) for line in lines if line.startswith("writes=")]

    def writes(self) -> int:
        """The client writes it has forwarded so far (it logs the count on SIGUSR1)."""
        import signal

        assert self.process is not None
        before = len(self.reports())
        self.process.send(signal.SIGUSR1)
        self.process.wait_until(lambda: len(self.reports()) > before, 10, "its writes= line")
        return self.reports()[-1]


def measure(
    scenario: str,
    servers: list[Server],
    rounds: int,
    duration: float,
    connections: int,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    proxies: dict[str, DelayProxy] | None = None,
    run_order: list[Server] | None = None,
) -> list[Row]:
    """Interleaved rounds; the rows in ``servers``' order, ratios to the first of them.

    ``run_order`` (the same servers) is the order they run in each round: servers whose
    ratio is a goal run next to each other, seconds apart. Each round after the first
    runs on new processes (``restart``).
    """
    results: dict[str, list[tuple[LoadResult, int, int, int | None, float]]] = {
        s.name: [] for s in servers
    }
    order = run_order or servers
    for round_number in range(rounds):
        if round_number > 0:
            restart(order, method, headers)
        # Forwards, then backwards: a drift of the machine's speed during a round hits
        # the servers early in one round and late in the next, so it cancels out of a
        # pair's ratio over two rounds instead of favouring whoever runs first.
        for server in order if round_number % 2 == 0 else order[::-1]:
            if server.redis is not None:
                server.redis.client().flushall()
            before = command_stats(server.redis)
            writes_before = (
                proxies[server.name].writes() if proxies and server.name in proxies else None
            )
            assert server.process is not None
            cpu_before = process_cpu_seconds(server.process.pid)
            load = run_load(
                "127.0.0.1", server.port, SEARCH if method == "GET" else "/search",
                connections=connections, duration=duration, method=method, headers=headers,
            )  # fmt: skip
            cpu = process_cpu_seconds(server.process.pid) - cpu_before
            total, scripts = delta(before, command_stats(server.redis))
            writes = None
            if writes_before is not None and proxies:
                writes = proxies[server.name].writes() - writes_before
            cpu_us = cpu / load.requests * 1e6 if load.requests else 0.0
            results[server.name].append((load, total, scripts, writes, cpu_us))

    baseline_rounds = [load.rps for load, *_ in results[servers[0].name]]
    baseline_cpu = statistics.median(run[4] for run in results[servers[0].name])
    rows = []
    for server in servers:
        runs = results[server.name]
        median_run = sorted(runs, key=lambda run: run[0].rps)[len(runs) // 2]
        load = median_run[0]
        requests = sum(run[0].requests for run in runs)
        with_redis = server.redis is not None
        cpu_us = statistics.median(run[4] for run in runs)
        rows.append(
            Row(
                scenario=scenario,
                server=server.name,
                rps=statistics.median(run[0].rps for run in runs),
                p50_ms=load.p50_ms,
                p99_ms=load.p99_ms,
                ratio=paired_ratio([run[0].rps for run in runs], baseline_rounds),
                cpu_us=cpu_us,
                cpu_ratio=baseline_cpu / cpu_us if cpu_us else 0.0,
                redis_commands=sum(run[1] for run in runs) / requests if with_redis else None,
                script_calls=sum(run[2] for run in runs) / requests if with_redis else None,
                round_trips=(
                    sum(run[3] or 0 for run in runs) / requests
                    if proxies and server.name in proxies
                    else None
                ),
                errors=sum(run[0].errors for run in runs),
                peak_rss_mb=server.peak_rss_mb(),
                startup_s=server.startup_s,
                generator=load.generator,
                round_rps=[run[0].rps for run in runs],
            )
        )
    return rows


def restart(servers: list[Server], method: str, headers: dict[str, str] | None) -> None:
    """New processes for ``servers``, each warmed up by a short load of the measured request.

    Two processes of the same server differ by a few percent (two bare FastAPI servers
    side by side measured 0.97x of each other over 30 alternations): where the address
    space layout and the hash seed put hot code and dictionaries decides cache conflicts.
    A process per round makes that one more thing the median over rounds averages out,
    instead of a bias fixed for the whole run.
    """
    for server in servers:
        server.stop()
        server.start()
        run_load(
            "127.0.0.1", server.port, SEARCH if method == "GET" else "/search",
            connections=4, duration=WARM_UP_SECONDS, method=method, headers=headers,
        )  # fmt: skip


# A fresh process's first requests fill its caches (routes, validators, connections).
WARM_UP_SECONDS = 0.3


@dataclass
class MemoryRow:
    server: str
    warm_requests: int  # answered before the idle reading
    requests: int  # answered after it, in two halves
    idle_rss_mb: float  # after start and the warm-up
    half_rss_mb: float  # after the first half
    end_rss_mb: float  # after all of them
    growth_mb: float  # end - idle
    late_growth_mb: float  # end - half: a leak keeps growing here, a warm-up does not
    errors: int


def measure_memory(
    servers: list[Server], requests: int, warm_requests: int, connections: int
) -> list[MemoryRow]:
    """Each server's resident set around a fixed number of requests (wrk, closed loop).

    Counts, not durations, bound each load (with a generous time bound besides), so
    every server gets the same work whatever its speed.
    """
    rows = []
    half = requests // 2

    def load(server: Server, count: int) -> LoadResult:
        # A bound in time too: at 500 req/s, far below any server here, and then some.
        return run_load(
            "127.0.0.1", server.port, SEARCH,
            connections=connections, duration=count / 500 + 10, requests=count,
        )  # fmt: skip

    for server in servers:
        if server.redis is not None:
            server.redis.client().flushall()
        warm = load(server, warm_requests)
        idle = server.rss_mb()
        first = load(server, half)
        middle = server.rss_mb()
        second = load(server, requests - half)
        end = server.rss_mb()
        rows.append(
            MemoryRow(
                server=server.name,
                warm_requests=warm.requests,
                requests=first.requests + second.requests,
                idle_rss_mb=idle,
                half_rss_mb=middle,
                end_rss_mb=end,
                growth_mb=end - idle,
                late_growth_mb=end - middle,
                errors=warm.errors + first.errors + second.errors,
            )
        )
    return rows


@dataclass
class LatencyRow:
    server: str
    rate: float  # requests per second, the same for every server
    duration: float  # seconds of schedule per round
    rounds: int
    scheduled: int  # over all rounds
    sent: int
    answered: int
    errors: int
    p50_ms: float  # from each request's scheduled send time to the end of its answer
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    client_lag_p99_ms: float  # how late the client's own timer was: a floor under p99
    script_calls: float | None  # EVALSHA/EVAL per answered request
    round_trips: float | None  # client writes to Redis per request (slow-Redis proxy only)


def measure_open_loop(
    servers: list[Server],
    rate: float,
    rounds: int,
    duration: float,
    connections: int,
    proxies: dict[str, DelayProxy],
) -> list[LatencyRow]:
    """Interleaved rounds at one fixed rate; each server's latencies pooled over rounds."""
    latencies: dict[str, list[float]] = {s.name: [] for s in servers}
    lags: dict[str, list[float]] = {s.name: [] for s in servers}
    counts: dict[str, list[int]] = {s.name: [0, 0, 0, 0, 0, 0] for s in servers}
    for _ in range(rounds):
        for server in servers:
            if server.redis is not None:
                server.redis.client().flushall()
            before = command_stats(server.redis)
            proxy = proxies.get(server.name)
            writes_before = proxy.writes() if proxy else 0
            result = run_open_loop(
                "127.0.0.1", server.port, SEARCH,
                rate=rate, duration=duration, connections=connections,
            )  # fmt: skip
            _, scripts = delta(before, command_stats(server.redis))
            writes = proxy.writes() - writes_before if proxy else 0
            latencies[server.name] += result.latencies_ms
            lags[server.name] += result.send_lags_ms
            for index, value in enumerate(
                (result.scheduled, result.sent, result.answered, result.errors, scripts, writes)
            ):
                counts[server.name][index] += value
    rows = []
    for server in servers:
        scheduled, sent, answered, errors, scripts, writes = counts[server.name]
        times = latencies[server.name]
        rows.append(
            LatencyRow(
                server=server.name,
                rate=rate,
                duration=duration,
                rounds=rounds,
                scheduled=scheduled,
                sent=sent,
                answered=answered,
                errors=errors,
                p50_ms=percentile(times, 0.5),
                p90_ms=percentile(times, 0.9),
                p99_ms=percentile(times, 0.99),
                p999_ms=percentile(times, 0.999),
                max_ms=max(times, default=0.0),
                client_lag_p99_ms=percentile(lags[server.name], 0.99),
                script_calls=scripts / answered if server.redis is not None and answered else None,
                round_trips=writes / answered if server.name in proxies and answered else None,
            )
        )
    return rows


def open_loop_rate(
    rows: list[Row], servers: list[str], fraction: float
) -> tuple[float, str, float]:
    """``fraction`` of the slowest of ``servers``' saturated req/s in this run, in tens.

    Returns the rate, the slowest server and its req/s. Each server's figure comes from
    the scenario it was saturated in: throughput, or slow Redis for the slow ones.
    """
    saturated = {
        row.server: row.rps for row in rows if row.scenario in ("throughput", "slow-redis")
    }
    missing = [name for name in servers if name not in saturated]
    if missing:
        raise SystemExit(
            f"no saturated rate measured for {', '.join(missing)}: "
            "give --open-loop-rate, or run the throughput and slow-redis scenarios"
        )
    slowest = min(servers, key=lambda name: saturated[name])
    rate = max(10.0, math.floor(fraction * saturated[slowest] / 10) * 10)
    return rate, slowest, saturated[slowest]


@dataclass
class InstructionRow:
    server: str
    per_request: float  # instructions (valgrind) or CPU microseconds (without)
    unit: str
    x_floor: float  # this over the floor's


# The servers counted, each as a bench.profile worker configuration and whether it runs
# the compiled build (when the run has one).
INSTRUCTION_CONFIGS = {
    "bare": ("bare", False),
    "floor": ("floor", False),
    "gatehouse-redis": ("gatehouse", True),
    "gatehouse-redis-interpreted": ("gatehouse", False),
}


def counting_env(redis_url: str) -> dict[str, str]:
    """The environment of bench.profile's counting workers, each server on ``redis_url``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "BENCH_"))}
    env.update(GATEHOUSE_ENV)
    env["APP_REDIS_URL"] = redis_url  # Gatehouse on the shared Redis
    env["BENCH_REDIS_URL"] = redis_url  # the floor's own check
    # One hash seed for the long and the short run of a server, so their start-ups are the
    # same work and cancel; with a random seed each, the difference moves by some 3k.
    env["PYTHONHASHSEED"] = "0"
    return env


def measure_instructions(
    redis_url: str, rounds: int, valgrind: bool, build: Path | None
) -> list[InstructionRow]:
    """Instructions per request through the server's HTTP protocol, in process (bench.profile).

    The count does not drift with the machine's speed, so it settles what req/s ratios
    within a few percent of each other cannot.
    """
    from bench.profile import cost_per_request  # bench.profile imports this module

    env = counting_env(redis_url)
    compiled_env = env if build is None else running_build(env, build)
    configs = {
        name: (config, compiled_env if compiled else env)
        for name, (config, compiled) in INSTRUCTION_CONFIGS.items()
        if build is not None or name != "gatehouse-redis-interpreted"  # else the same twice
    }
    # Counted instructions do not depend on what else runs: use every core. CPU time does.
    workers = (os.cpu_count() or 1) if valgrind else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        costs = list(
            pool.map(
                lambda plan: cost_per_request(plan[0], rounds, plan[1], valgrind),
                configs.values(),
            )
        )
    per_server = dict(zip(configs, costs, strict=True))
    unit = "instructions" if valgrind else "CPU us"
    return [
        InstructionRow(name, cost, unit, cost / per_server["floor"] if per_server["floor"] else 0.0)
        for name, cost in per_server.items()
    ]


@dataclass
class Goal:
    goal: str
    value: float | None  # None: not measured in this run
    target: float
    at_most: bool  # the value must stay at or below the target (else at or above)
    shown: str  # the value as the table shows it

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.target if self.at_most else self.value >= self.target


# RSS a server may gain over the second half of the requests: allocator noise, not a leak.
RSS_NOISE_MB = 1.0


def evaluate_goals(
    rows: list[Row], instructions: list[InstructionRow], memory: list[MemoryRow]
) -> list[Goal]:
    rounds = {row.server: row.round_rps for row in rows if row.scenario == "throughput"}

    def ratio(server: str, over: str) -> float | None:
        if server not in rounds or over not in rounds:
            return None
        return paired_ratio(rounds[server], rounds[over])

    goals = []
    for server, over, target, text in (
        ("gatehouse-redis", "floor", 0.95, "Gatehouse (shared Redis) req/s >= 0.95x the floor's"),
        ("gatehouse-redis", "bare", 0.80, "Gatehouse (shared Redis) req/s >= 0.80x bare FastAPI's"),
        (
            "gatehouse-memory",
            "bare",
            0.90,
            "Gatehouse (memory store) req/s >= 0.90x bare FastAPI's",
        ),
    ):
        value = ratio(server, over)
        goals.append(Goal(text, value, target, False, "-" if value is None else f"{value:.2f}x"))
    counted = {row.server: row for row in instructions}
    gatehouse = counted.get("gatehouse-redis")
    unit = gatehouse.unit if gatehouse else "instructions"
    goals.append(
        Goal(
            f"Gatehouse (shared Redis) {unit} per request within 5% of the floor's (<= 1.05x)",
            gatehouse.x_floor if gatehouse else None,
            1.05,
            True,
            f"{gatehouse.x_floor:.3f}x" if gatehouse else "-",
        )
    )
    worst = max(memory, key=lambda row: row.late_growth_mb, default=None)
    goals.append(
        Goal(
            f"No RSS growth: each server gains <= {RSS_NOISE_MB:.0f} MB over the second half "
            "of the memory run's requests",
            worst.late_growth_mb if worst else None,
            RSS_NOISE_MB,
            True,
            f"{worst.late_growth_mb:+.1f} MB ({worst.server})" if worst else "-",
        )
    )
    return goals


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    names = (
        "fastapi", "starlette", "uvicorn", "slowapi", "limits", "secure", "redis", "hiredis",
        "pydantic",
    )  # fmt: skip
    found = {name: metadata.version(name) for name in names}
    found["python"] = platform.python_version()
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found["redis-server"] = server.split("v=")[1].split()[0] if "v=" in server else "?"
    return found


def build_note(build: Path | None) -> str:
    """What the gatehouse-* servers ran, for the report."""
    if build is None:
        return "the sources, interpreted (--build interpreted)"
    compiled = sorted(build.rglob(f"*{sysconfig.get_config_var('EXT_SUFFIX')}"))
    modules = [path for path in compiled if COMPILED_RUNTIME not in path.name]
    return (
        f"the compiled build the image ships (make compiled: {len(modules)} hot-path modules, "
        f"mypyc {metadata.version('mypy')}); `gatehouse-redis-interpreted` is the same on the "
        "sources"
    )


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def headline(rows: list[Row], instructions: list[InstructionRow], latency: list[LatencyRow]) -> str:
    """One sentence for the README: the throughput ratios, instructions, latency."""
    rounds = {row.server: row.round_rps for row in rows if row.scenario == "throughput"}
    clauses = []
    if {"gatehouse-redis", "bare", "floor"} <= rounds.keys():
        clauses.append(
            f"Gatehouse with the shared Redis serves "
            f"{paired_ratio(rounds['gatehouse-redis'], rounds['bare']):.2f}x bare FastAPI's "
            f"req/s ({paired_ratio(rounds['gatehouse-redis'], rounds['floor']):.2f}x the floor's)"
        )
    if {"gatehouse-redis", "gatehouse-redis-interpreted", "bare", "floor"} <= rounds.keys():
        ratio = paired_ratio(rounds["gatehouse-redis-interpreted"], rounds["bare"])
        clauses[-1] += f", compiled as the image ships it; {ratio:.2f}x on the sources"
    if {"gatehouse-memory", "bare"} <= rounds.keys():
        clauses.append(
            f"{paired_ratio(rounds['gatehouse-memory'], rounds['bare']):.2f}x with the memory store"
        )
    if {"peer", "bare"} <= rounds.keys():
        clauses.append(f"the peer stack {paired_ratio(rounds['peer'], rounds['bare']):.2f}x")
    counted = {row.server: row for row in instructions}
    if "gatehouse-redis" in counted:
        gate = counted["gatehouse-redis"]
        clauses.append(f"{gate.x_floor:.3f}x the floor's {gate.unit} per request")
    sentence = "; ".join(clauses) or "No throughput measured"
    timed = {row.server: row for row in latency}
    if {"gatehouse-redis", "peer"} <= timed.keys():
        gate_time, peer_time = timed["gatehouse-redis"], timed["peer"]
        sentence += (
            f". At {gate_time.rate:.0f} req/s (open loop) p99 is {gate_time.p99_ms:.1f} ms "
            f"against the peer's {peer_time.p99_ms:.1f} ms"
        )
        if {"gatehouse-redis-slow", "peer-slow"} <= timed.keys():
            sentence += (
                f", and {timed['gatehouse-redis-slow'].p99_ms:.1f} ms against "
                f"{timed['peer-slow'].p99_ms:.1f} ms with a slow Redis"
            )
    return sentence + "."


def _verdict(goal: Goal) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[goal.met]


# How bench.profile's worker serves the requests it counts.
PROFILE_WORKER_NOTE = (
    "32 keep-alive connections on in-memory transports served by the HTTP protocol each "
    "server runs (uvicorn's; Gatehouse's subclass of it for Gatehouse; no sockets), the "
    "Redis replies real,"
)


def write_markdown(
    rows: list[Row],
    memory: list[MemoryRow],
    latency: list[LatencyRow],
    instructions: list[InstructionRow],
    goals: list[Goal],
    meta: dict[str, object],
    path: Path,
) -> None:
    lines = [
        "# Gatehouse benchmark",
        "",
        f"**{meta['headline']}**",
        "",
        f"Run {meta['date']} on {meta['cores']} cores ({meta['cpu_model']}), {meta['platform']}.",
        "",
        "## Goals (issue 20), computed from this run",
        "",
        "| goal | this run | verdict |",
        "|---|---:|---|",
    ]
    lines += [f"| {goal.goal} | {goal.shown} | {_verdict(goal)} |" for goal in goals]
    lines += [
        "",
        "Ratios of req/s are medians over rounds of the two servers' req/s in the same round "
        "(throughput scenario).",
        "",
        "## Throughput, preflight, slow Redis (closed loop, saturated)",
        "",
        f"Load: {meta['generator']}, {meta['connections']} connections, {meta['rounds']} "
        f"interleaved rounds of {meta['duration']} s per server and scenario (medians). "
        f"Slow Redis: +{meta['delay_ms']} ms each way. "
        + (
            "Each server ran on a core of its own, wrk, Redis and the delay proxies on the "
            "other (--pin). "
            if meta.get("pinned")
            else ""
        )
        + "Rounds run forwards and backwards in turn, the servers of each goal's ratio side "
        "by side, and each round after the first on fresh server processes (warmed up for "
        f"{WARM_UP_SECONDS} s): a process's memory layout moves its speed by a few percent.",
        "",
        "| scenario | server | req/s | x bare | CPU us/req | x bare (CPU) | p50 ms | p99 ms | Redis cmds/req | scripts/req | round trips/req | errors | peak RSS MB | start s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.scenario} | {row.server} | {row.rps:.0f} | {row.ratio:.2f} | "
            f"{row.cpu_us:.1f} | {row.cpu_ratio:.2f} | {row.p50_ms:.2f} | "
            f"{row.p99_ms:.2f} | {_cell(row.redis_commands)} | {_cell(row.script_calls)} | "
            f"{_cell(row.round_trips)} | {row.errors} | {row.peak_rss_mb:.0f} | {row.startup_s:.2f} |"
        )
    lines += [
        "",
        "`x bare` is the median over rounds of the server's req/s over bare FastAPI's in the "
        "same round and scenario. `CPU us/req` is the server process's own CPU time (user + "
        "kernel, from /proc) per answered request, and `x bare (CPU)` bare's figure over this "
        "one: the two ratios agree while the server saturates its core, and the CPU one is "
        "steadier from run to run, because it does not depend on how wrk and Redis share the "
        "other core. `Redis cmds/req` counts every command Redis ran (commands inside scripts "
        "too); `scripts/req` the EVALSHA/EVAL calls; `round trips/req` the writes each server "
        "made to Redis through the delay proxy (pipelined checks share a write, so it can be "
        "below 1). In the preflight scenario bare FastAPI has no CORS: it answers 405, counted "
        "as errors, and its rate is that of a refusal.",
        "",
        "Servers: `bare` is FastAPI with Gatehouse's route and nothing else; `bare+headers` "
        "adds the header fields Gatehouse sends, as constants; `floor` adds one rate-limit "
        "check through Gatehouse's own pipelined Redis client: the floor under any edge with "
        "this contract. `peer` is what a team would pick instead: Starlette's CORSMiddleware, "
        "the `secure` package's headers, `limits`' async Redis storage as a FastAPI dependency "
        "(one script call per check, in its own Redis; no rate-limit headers, no request id). "
        "`lesson-*` is the lesson's stack (slowapi, `@app.middleware`). "
        f"The `gatehouse-*` servers run {meta['build']}, on Gatehouse's own HTTP protocol "
        "(the request head's limits and its response-head writer: `--http "
        f"{GATEHOUSE_PROTOCOL}`, as `python -m gatehouse` serves); the others on uvicorn's.",
    ]
    if memory:
        lines += [
            "",
            "## Memory (resident set of the one uvicorn worker)",
            "",
            f"Fresh processes, before any other scenario: {memory[0].warm_requests} warm-up "
            f"requests, then the idle reading, then {memory[0].requests} requests in two halves "
            f"(the load generator stopped by request count, {meta['connections']} connections), read after each.",
            "",
            "| server | idle MB | after half MB | after all MB | growth MB | growth in 2nd half MB | requests | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in memory:
            lines.append(
                f"| {m.server} | {m.idle_rss_mb:.1f} | {m.half_rss_mb:.1f} | {m.end_rss_mb:.1f} | "
                f"{m.growth_mb:+.1f} | {m.late_growth_mb:+.1f} | {m.requests} | {m.errors} |"
            )
        lines += [
            "",
            "A leak grows with every request, in the second half as in the first; a warm-up "
            "(buffers for the connections, the allocator's arenas, caches filling) stops.",
        ]
    if latency:
        lines += [
            "",
            "## Latency at a fixed rate (open loop)",
            "",
            f"{meta['open_loop_rate_note']} Requests leave on a schedule whether or not earlier "
            "ones were answered (round-robin over "
            f"{meta['connections']} keep-alive connections, one in flight each, the rest queued "
            "behind it), and each latency runs from the request's scheduled send time, so "
            f"queueing is counted (no coordinated omission). {latency[0].rounds} interleaved "
            f"rounds of {latency[0].duration} s per server, latencies pooled over rounds. "
            "`client lag p99` is how late the client's own timer fired: the figures cannot be "
            "finer than that.",
            "",
            "| server | rate req/s | scheduled | sent | answered | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | client lag p99 ms | scripts/req | round trips/req |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lat in latency:
            lines.append(
                f"| {lat.server} | {lat.rate:.0f} | {lat.scheduled} | {lat.sent} | "
                f"{lat.answered} | {lat.errors} | {lat.p50_ms:.2f} | {lat.p90_ms:.2f} | "
                f"{lat.p99_ms:.2f} | {lat.p999_ms:.2f} | {lat.max_ms:.1f} | "
                f"{lat.client_lag_p99_ms:.2f} | {_cell(lat.script_calls)} | "
                f"{_cell(lat.round_trips)} |"
            )
        lines += [
            "",
            "The `-slow` servers reach their Redis through the delay proxy. The pipelined "
            "client sends the checks of one event-loop tick in one write, so its round trips "
            "per request fall as requests overlap; the peer's pool sends one per check.",
        ]
    if meta["instructions_failed"]:
        lines += [
            "",
            "## Instructions per request",
            "",
            f"Not counted: {meta['instructions_failed']}",
        ]
    if instructions:
        unit = instructions[0].unit
        lines += [
            "",
            f"## {unit[0].upper()}{unit[1:]} per request",
            "",
            f"bench.profile's worker: {PROFILE_WORKER_NOTE} {meta['instruction_rounds']} requests a "
            "connection, "
            + (
                "counted by valgrind's cachegrind as the difference between a long and a short "
                "run (start-up cancels out)."
                if unit == "instructions"
                else "CPU time (valgrind not used)."
            ),
            "",
            f"| server | {unit}/request | x floor |",
            "|---|---:|---:|",
        ]
        digits = 0 if unit == "instructions" else 1
        lines += [
            f"| {i.server} | {i.per_request:,.{digits}f} | {i.x_floor:.3f} |" for i in instructions
        ]
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),  # type: ignore[attr-defined]
        "",
        "![results](results.png)",
        "",
    ]
    path.write_text("\n".join(lines))


def write_chart(
    rows: list[Row], memory: list[MemoryRow], latency: list[LatencyRow], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(row.scenario for row in rows))
    columns = max(len(scenarios), 2)
    figure, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 9), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=False):
        chosen = [row for row in rows if row.scenario == scenario]
        axis.barh([row.server for row in chosen], [row.rps for row in chosen], color="#4878a8")
        for index, row in enumerate(chosen):
            axis.text(row.rps, index, f" {row.ratio:.2f}x", va="center", fontsize=8)
        axis.set_title(f"{scenario}: req/s (x bare)")
        axis.invert_yaxis()
    latency_axis, memory_axis = axes[1][0], axes[1][1]
    if latency:
        names = [row.server for row in latency]
        positions = range(len(names))
        latency_axis.barh([p - 0.2 for p in positions], [r.p50_ms for r in latency], 0.4,
                          label="p50", color="#4878a8")  # fmt: skip
        latency_axis.barh([p + 0.2 for p in positions], [r.p99_ms for r in latency], 0.4,
                          label="p99", color="#d08040")  # fmt: skip
        latency_axis.set_yticks(list(positions), names)
        latency_axis.set_xscale("log")
        latency_axis.set_xlabel("ms from scheduled send (log)")
        latency_axis.set_title(f"open loop at {latency[0].rate:.0f} req/s")
        latency_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        latency_axis.invert_yaxis()
    if memory:
        names = [row.server for row in memory]
        positions = range(len(names))
        memory_axis.barh([p - 0.2 for p in positions], [r.idle_rss_mb for r in memory], 0.4,
                         label="idle", color="#4878a8")  # fmt: skip
        memory_axis.barh([p + 0.2 for p in positions], [r.end_rss_mb for r in memory], 0.4,
                         label=f"after {memory[0].requests} requests", color="#d08040")  # fmt: skip
        memory_axis.set_yticks(list(positions), names)
        memory_axis.set_xlabel("RSS MB")
        memory_axis.set_title("memory per worker")
        memory_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        memory_axis.invert_yaxis()
    for axis in [*axes[0][len(scenarios) :], *axes[1][2:]]:
        axis.set_visible(False)
    for axis in (latency_axis, memory_axis):
        if not axis.has_data():
            axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


ALL_SCENARIOS = "memory,throughput,preflight,slow-redis,open-loop,instructions"
OPEN_LOOP_SERVERS = ("bare", "peer", "gatehouse-redis", "peer-slow", "gatehouse-redis-slow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds rather than a few long ones: on a shared 2-core VM the speed
    # drifts by 10% from minute to minute, and a median of many interleaved rounds
    # lets the drift hit every server alike.
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per server per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="slow-Redis delay each way")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--scenarios", default=ALL_SCENARIOS)
    parser.add_argument(
        "--rss-requests", type=int, default=100_000, help="requests between the RSS readings"
    )
    parser.add_argument("--rss-warm-requests", type=int, default=2_000)
    parser.add_argument(
        "--open-loop-duration", type=float, default=3.0, help="seconds per server per round"
    )
    parser.add_argument(
        "--open-loop-rate", type=float, default=0.0,
        help="fixed req/s; 0: --open-loop-fraction of the slowest open-loop server's saturated req/s",
    )  # fmt: skip
    parser.add_argument("--open-loop-fraction", type=float, default=0.5)
    parser.add_argument(
        "--instruction-rounds", type=int, default=120, help="requests per connection, long run"
    )
    parser.add_argument(
        "--no-valgrind", action="store_true", help="CPU time instead of instructions"
    )
    parser.add_argument(
        "--build", choices=("compiled", "interpreted"), default="compiled",
        help="what the gatehouse-* servers run: the image's compiled build (make compiled, "
        "beside a gatehouse-redis-interpreted twin on the sources) or the sources",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True,
        help="run each server on a core of its own, everything else on the others "
        "(when there are two or more)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    all_cpus = os.sched_getaffinity(0)
    if args.pin and len(all_cpus) > 1:
        # The server under load gets a core of its own; the load generator, Redis and the
        # delay proxies (all started from here, so inheriting this) share the others. On
        # a 2-core VM, otherwise, the scheduler moves wrk and Redis onto the server's core
        # at whim, and each round measures where they landed as much as the server.
        server_cpus, other_cpus = split_cores()
        SERVER_CPUS.update(server_cpus)
        os.sched_setaffinity(0, other_cpus)
    scenarios = set(args.scenarios.split(","))
    unknown = scenarios - set(ALL_SCENARIOS.split(","))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    valgrind = shutil.which("valgrind") is not None and not args.no_valgrind
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    build = compiled_build() if args.build == "compiled" else None

    redis_plain = RedisServer()
    redis_lesson = RedisServer()
    redis_slow_gatehouse = RedisServer()
    redis_slow_lesson = RedisServer()
    redis_windows = RedisServer()
    redis_default_gc = RedisServer()
    redis_floor = RedisServer()
    redis_peer = RedisServer()
    redis_slow_peer = RedisServer()
    redis_instructions = RedisServer()
    redis_interpreted = RedisServer()
    redises = [
        redis_interpreted,
        redis_floor,
        redis_plain,
        redis_lesson,
        redis_slow_gatehouse,
        redis_slow_lesson,
        redis_windows,
        redis_default_gc,
        redis_peer,
        redis_slow_peer,
        redis_instructions,
    ]
    servers: list[Server] = []
    proxies: dict[str, DelayProxy] = {}
    rows: list[Row] = []
    memory: list[MemoryRow] = []
    latency: list[LatencyRow] = []
    instructions: list[InstructionRow] = []
    rate_note = ""

    def url(server: RedisServer, port: int | None = None) -> str:
        return f"redis://127.0.0.1:{port or server.port}/0"

    try:
        for server in redises:
            server.start()

        bare = Server("bare", "bench.apps.bare:app", {})
        bare_headers = Server("bare+headers", "bench.apps.bare_headers:app", {})
        floor = Server(
            "floor", "bench.apps.floor:app", {"BENCH_REDIS_URL": url(redis_floor)}, redis_floor
        )
        peer = Server(
            "peer", "bench.apps.peer:app", {"BENCH_REDIS_URL": url(redis_peer)}, redis_peer
        )
        lesson_memory = Server(
            "lesson-memory", "bench.apps.lesson:app", {"BENCH_STORAGE_URI": "memory://"}
        )
        lesson_redis = Server(
            "lesson-redis",
            "bench.apps.lesson:app",
            {"BENCH_STORAGE_URI": url(redis_lesson)},
            redis_lesson,
        )
        gate_memory = Server("gatehouse-memory", GATEHOUSE_APP, dict(GATEHOUSE_ENV), build=build)
        gate_redis = Server(
            "gatehouse-redis",
            GATEHOUSE_APP,
            {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_plain)},
            redis_plain,
            build=build,
        )
        # The same on the sources: what compiling buys (only in a run of the compiled build).
        gate_interpreted = Server(
            "gatehouse-redis-interpreted",
            GATEHOUSE_APP,
            {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_interpreted)},
            redis_interpreted,
        )
        # The same, with CPython's default collector settings: what the tuning buys.
        gate_redis_default_gc = Server(
            "gatehouse-redis-default-gc",
            "bench.apps.gatehouse_default_gc:create_app",
            {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_default_gc)},
            redis_default_gc,
            build=build,
        )
        # Three windows in one check: still one script call, one round trip.
        gate_windows = Server(
            "gatehouse-redis-3-windows",
            GATEHOUSE_APP,
            {
                **GATEHOUSE_ENV,
                "APP_REDIS_URL": url(redis_windows),
                "APP_RATE_LIMIT_SEARCH": "1000000/second;10000000/minute;100000000/hour",
            },
            redis_windows,
            build=build,
        )
        main_servers = [
            bare,
            bare_headers,
            floor,
            peer,
            lesson_memory,
            lesson_redis,
            gate_memory,
            gate_redis,
            *([gate_interpreted] if build is not None else []),
            gate_redis_default_gc,
            gate_windows,
        ]
        servers += main_servers
        for server in main_servers:
            server.start()

        if "memory" in scenarios:
            memory = measure_memory(
                [bare, floor, peer, gate_redis],
                args.rss_requests,
                args.rss_warm_requests,
                args.connections,
            )
        if "throughput" in scenarios:
            rows += measure(
                "throughput", main_servers, args.rounds, args.duration, args.connections,
                # Each goal's pair runs side by side: floor and Gatehouse, Gatehouse and
                # bare, bare and Gatehouse's memory store.
                run_order=[floor, gate_redis, bare, gate_memory, bare_headers,
                           *[s for s in main_servers if s not in (floor, gate_redis, bare, gate_memory, bare_headers)]],
            )  # fmt: skip
        if "preflight" in scenarios:
            preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
            rows += measure(
                "preflight", [bare, lesson_redis, peer, gate_redis], args.rounds, args.duration,
                args.connections, method="OPTIONS", headers=preflight,
            )  # fmt: skip
        slow: dict[str, Server] = {}
        if scenarios & {"slow-redis", "open-loop"}:
            proxies["lesson-redis-slow"] = DelayProxy(redis_slow_lesson.port, args.delay_ms)
            proxies["peer-slow"] = DelayProxy(redis_slow_peer.port, args.delay_ms)
            proxies["gatehouse-redis-slow"] = DelayProxy(redis_slow_gatehouse.port, args.delay_ms)
            slow = {
                "lesson-redis-slow": Server(
                    "lesson-redis-slow", "bench.apps.lesson:app",
                    {"BENCH_STORAGE_URI": url(redis_slow_lesson, proxies["lesson-redis-slow"].port)},
                    redis_slow_lesson,
                ),
                "peer-slow": Server(
                    "peer-slow", "bench.apps.peer:app",
                    {"BENCH_REDIS_URL": url(redis_slow_peer, proxies["peer-slow"].port)},
                    redis_slow_peer,
                ),
                "gatehouse-redis-slow": Server(
                    "gatehouse-redis-slow", GATEHOUSE_APP,
                    {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_slow_gatehouse, proxies["gatehouse-redis-slow"].port),
                     "APP_REDIS_TIMEOUT": "1.0"},
                    redis_slow_gatehouse, build=build,
                ),
            }  # fmt: skip
            for server in slow.values():
                servers.append(server)
                server.start()
        if "slow-redis" in scenarios:
            rows += measure(
                "slow-redis", [bare, *slow.values()], args.rounds, args.duration,
                args.connections, proxies=proxies,
            )  # fmt: skip
        if "open-loop" in scenarios:
            if SERVER_CPUS:
                # Unpinned again: at a fixed rate nothing saturates, and the open-loop
                # client (Python), Redis and the delay proxies on one core added their
                # own queueing to every latency (client lag p99 2.5 ms, against 1 ms).
                for process in [*servers, *redises, *proxies.values()]:
                    if process.process is not None and process.process.pid is not None:
                        pin(process.process.pid, all_cpus)
                os.sched_setaffinity(0, all_cpus)
                SERVER_CPUS.clear()
            if args.open_loop_rate > 0:
                rate = args.open_loop_rate
                rate_note = f"Rate: {rate:.0f} req/s, fixed (--open-loop-rate)."
            else:
                rate, slowest, saturated = open_loop_rate(
                    rows, list(OPEN_LOOP_SERVERS), args.open_loop_fraction
                )
                rate_note = (
                    f"Rate: {rate:.0f} req/s for every server, {args.open_loop_fraction:.0%} of "
                    f"the slowest of them saturated in this run ({slowest}, {saturated:.0f} "
                    "req/s), rounded down to tens."
                )
            by_name = {server.name: server for server in [*main_servers, *slow.values()]}
            latency = measure_open_loop(
                [by_name[name] for name in OPEN_LOOP_SERVERS],
                rate,
                args.rounds,
                args.open_loop_duration,
                args.connections,
                proxies,
            )
    finally:
        for server in servers:
            server.stop()
        for proxy in proxies.values():
            proxy.stop()
        for server in redises:
            if server is not redis_instructions:
                server.stop()
        # Counted instructions do not depend on what shares a core: valgrind may use them
        # all; and a caller (the smoke test's process) gets its cores back.
        os.sched_setaffinity(0, all_cpus)
        SERVER_CPUS.clear()
    instructions_failed = ""
    try:
        # Last, with every timed server stopped: valgrind may then take both cores.
        if "instructions" in scenarios:
            instructions = measure_instructions(
                url(redis_instructions), args.instruction_rounds, valgrind, build
            )
    except RuntimeError as error:
        # Minutes of measures are not thrown away for it: the report says what failed.
        instructions_failed = str(error)
        print(f"bench: instructions not counted: {error}", file=sys.stderr)
    finally:
        redis_instructions.stop()

    goals = evaluate_goals(rows, instructions, memory)
    meta: dict[str, object] = {
        "headline": headline(rows, instructions, latency),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "pinned": args.pin and len(all_cpus) > 1,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "generator": rows[0].generator if rows else "-",
        "connections": args.connections,
        "rounds": args.rounds,
        "duration": args.duration,
        "delay_ms": args.delay_ms,
        "rss_requests": args.rss_requests,
        "open_loop_rate_note": rate_note,
        "instruction_rounds": args.instruction_rounds,
        "instructions_failed": instructions_failed,
        "valgrind": valgrind,
        "versions": versions(),
        "build": build_note(build),
        "seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "results.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "goals": [{**asdict(goal), "met": goal.met} for goal in goals],
                "rows": [asdict(r) for r in rows],
                "memory": [asdict(m) for m in memory],
                "open_loop": [asdict(lat) for lat in latency],
                "instructions": [asdict(i) for i in instructions],
            },
            indent=2,
        )
    )
    write_markdown(rows, memory, latency, instructions, goals, meta, args.out / "results.md")
    write_chart(rows, memory, latency, args.out / "results.png")
    print((args.out / "results.md").read_text())
    print(f"bench: {meta['seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
