"""``make bench``: bare FastAPI, the lesson's stack and Gatehouse, side by side, in one run.

Every server is a real uvicorn process with one worker serving ``GET /search?q=x``; the
same load generator hits each in turn, round after round (interleaved, so machine
noise hits all alike). Scenarios:

1. throughput: each server, memory and Redis storage;
2. slow Redis: a proxy adds a delay each way between the servers and their Redis;
3. preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``.

Writes ``results.md``, ``results.json`` and ``results.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from stack.processes import Process, http_ok
from tests.helpers import RedisServer, Supervised, free_port, temp_dir

from bench.capacity import process_cpu_seconds
from bench.load import LoadResult, run_load

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SEARCH = "/search?q=x"
ALLOWED_ORIGIN = "http://localhost:5173"
# Never refuse during a benchmark: every request pays for a full check.
BENCH_LIMIT = "1000000/minute"
# Gatehouse as every other path builds it: the application factory.
GATEHOUSE_APP = "gatehouse.service:create_app"
GATEHOUSE_ENV = {
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


@dataclass
class Server(Supervised):
    name: str
    app: str
    env: dict[str, str]
    redis: RedisServer | None = None
    port: int = field(default_factory=free_port)
    process: Process | None = None
    startup_s: float = 0.0

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("APP_", "BENCH_"))}
        env.update(self.env)
        argv = [
            PYTHON,
            "-m",
            "uvicorn",
            self.app,
            # An app named create_app is a factory (Gatehouse's create_app).
            *(["--factory"] if self.app.endswith(":create_app") else []),
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

    def peak_rss_mb(self) -> float:
        assert self.process is not None and self.process.pid is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0


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
) -> list[Row]:
    results: dict[str, list[tuple[LoadResult, int, int, int | None, float]]] = {
        s.name: [] for s in servers
    }
    for _ in range(rounds):
        for server in servers:
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

    baseline = statistics.median(load.rps for load, *_ in results[servers[0].name])
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
                ratio=statistics.median(run[0].rps for run in runs) / baseline if baseline else 0.0,
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
            )
        )
    return rows


def versions() -> dict[str, str]:
    names = ("fastapi", "starlette", "uvicorn", "slowapi", "limits", "redis", "hiredis", "pydantic")
    found = {name: metadata.version(name) for name in names}
    found["python"] = platform.python_version()
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found["redis-server"] = server.split("v=")[1].split()[0] if "v=" in server else "?"
    return found


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def write_markdown(rows: list[Row], meta: dict[str, object], path: Path) -> None:
    lines = [
        "# Gatehouse benchmark",
        "",
        f"Machine: {meta['cores']} cores, {meta['platform']}. Load: {meta['generator']}, "
        f"{meta['connections']} connections, {meta['rounds']} interleaved rounds of "
        f"{meta['duration']} s per server and scenario (medians). Slow Redis: +{meta['delay_ms']} ms each way.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),  # type: ignore[attr-defined]
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
        "`x bare` is the ratio to bare FastAPI's req/s in the same scenario and run. "
        "`CPU us/req` is the server process's own CPU time (user + kernel, from /proc) per "
        "answered request, and `x bare (CPU)` bare's figure over this one: the two ratios "
        "agree while the server saturates its core, and the CPU one is steadier from run to "
        "run, because it does not depend on how wrk and Redis share the other core. "
        "`Redis cmds/req` counts every command Redis ran (commands inside scripts too); "
        "`scripts/req` the EVALSHA/EVAL calls; `round trips/req` the writes each server made "
        "to Redis through the delay proxy (pipelined checks share a write, so it can be below 1). "
        "In the preflight scenario bare FastAPI has no CORS: it answers 405, counted as errors, "
        "and its rate is that of a refusal. `bare+16-headers+redis-check` is the floor under "
        "any edge with this contract: the header fields as constants and one check through "
        "the same Redis client, nothing else.",
        "",
    ]
    path.write_text("\n".join(lines))


def write_chart(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(row.scenario for row in rows))
    figure, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    for axis, scenario in zip(axes[0], scenarios, strict=True):
        chosen = [row for row in rows if row.scenario == scenario]
        axis.barh([row.server for row in chosen], [row.rps for row in chosen], color="#4878a8")
        for index, row in enumerate(chosen):
            axis.text(row.rps, index, f" {row.ratio:.2f}x", va="center", fontsize=8)
        axis.set_title(scenario)
        axis.set_xlabel("requests per second")
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Many short rounds rather than a few long ones: on a shared 2-core VM the speed
    # drifts by 10% from minute to minute, and a median of many interleaved rounds
    # lets the drift hit every server alike.
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per server per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=2.0, help="slow-Redis delay each way")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--scenarios", default="throughput,slow-redis,preflight")
    args = parser.parse_args(argv)
    scenarios = set(args.scenarios.split(","))
    args.out.mkdir(parents=True, exist_ok=True)

    redis_plain = RedisServer()
    redis_lesson = RedisServer()
    redis_slow_gatehouse = RedisServer()
    redis_slow_lesson = RedisServer()
    redis_windows = RedisServer()
    redis_default_gc = RedisServer()
    redis_floor = RedisServer()
    redises = [
        redis_floor,
        redis_plain,
        redis_lesson,
        redis_slow_gatehouse,
        redis_slow_lesson,
        redis_windows,
        redis_default_gc,
    ]
    servers: list[Server] = []
    proxies: dict[str, DelayProxy] = {}
    rows: list[Row] = []
    try:
        for server in redises:
            server.start()

        def url(server: RedisServer, port: int | None = None) -> str:
            return f"redis://127.0.0.1:{port or server.port}/0"

        bare = Server("bare", "bench.apps.bare:app", {})
        bare_headers = Server("bare+16-headers", "bench.apps.bare_headers:app", {})
        floor = Server(
            "bare+16-headers+redis-check",
            "bench.apps.floor:app",
            {"BENCH_REDIS_URL": url(redis_floor)},
            redis_floor,
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
        gate_memory = Server("gatehouse-memory", GATEHOUSE_APP, dict(GATEHOUSE_ENV))
        gate_redis = Server(
            "gatehouse-redis",
            GATEHOUSE_APP,
            {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_plain)},
            redis_plain,
        )
        # The same, with CPython's default collector settings: what the tuning buys.
        gate_redis_default_gc = Server(
            "gatehouse-redis-default-gc",
            "bench.apps.gatehouse_default_gc:create_app",
            {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_default_gc)},
            redis_default_gc,
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
        )
        main_servers = [
            bare,
            bare_headers,
            floor,
            lesson_memory,
            lesson_redis,
            gate_memory,
            gate_redis,
            gate_redis_default_gc,
            gate_windows,
        ]
        servers += main_servers
        for server in main_servers:
            server.start()

        if "throughput" in scenarios:
            rows += measure(
                "throughput", main_servers, args.rounds, args.duration, args.connections
            )
        if "preflight" in scenarios:
            preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
            rows += measure(
                "preflight", [bare, lesson_redis, gate_redis], args.rounds, args.duration,
                args.connections, method="OPTIONS", headers=preflight,
            )  # fmt: skip
        if "slow-redis" in scenarios:
            proxies["lesson-redis-slow"] = DelayProxy(redis_slow_lesson.port, args.delay_ms)
            proxies["gatehouse-redis-slow"] = DelayProxy(redis_slow_gatehouse.port, args.delay_ms)
            slow = [
                bare,
                Server(
                    "lesson-redis-slow", "bench.apps.lesson:app",
                    {"BENCH_STORAGE_URI": url(redis_slow_lesson, proxies["lesson-redis-slow"].port)},
                    redis_slow_lesson,
                ),
                Server(
                    "gatehouse-redis-slow", GATEHOUSE_APP,
                    {**GATEHOUSE_ENV, "APP_REDIS_URL": url(redis_slow_gatehouse, proxies["gatehouse-redis-slow"].port),
                     "APP_REDIS_TIMEOUT": "1.0"},
                    redis_slow_gatehouse,
                ),
            ]  # fmt: skip
            for server in slow[1:]:
                servers.append(server)
                server.start()
            rows += measure(
                "slow-redis", slow, args.rounds, args.duration, args.connections, proxies=proxies
            )
    finally:
        for server in servers:
            server.stop()
        for proxy in proxies.values():
            proxy.stop()
        for server in redises:
            server.stop()

    meta: dict[str, object] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "generator": rows[0].generator if rows else "-",
        "connections": args.connections,
        "rounds": args.rounds,
        "duration": args.duration,
        "delay_ms": args.delay_ms,
        "versions": versions(),
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2)
    )
    write_markdown(rows, meta, args.out / "results.md")
    write_chart(rows, args.out / "results.png")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
