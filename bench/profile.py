"""``make bench-profile``: where the time of one ``GET /search`` goes, four ways.

1. Server CPU per request. Each server is a real uvicorn process loaded by wrk until
   it saturates its core; its own CPU time (user + kernel, from ``/proc``) divided by
   the requests it answered. Rows go from bare FastAPI to Gatehouse on Redis, so each
   difference is one component: the header volume, the edge's logic, the Redis check.
2. Layers, in process. 32 keep-alive connections on in-memory transports, served by
   the HTTP protocol each server runs live (uvicorn's httptools one; Gatehouse's
   configurations on Gatehouse's subclass of it): request parsing, the proxy-headers
   middleware and the header validation and serialisation uvicorn does per response
   field are all counted; only the sockets are not. Bare FastAPI, the contract's
   header volume and one Redis check; then Gatehouse's FastAPI app alone and with each
   edge layer added from the inside out. Each configuration runs in a process of its
   own; its cost per request is the difference between a long and a short run, counted
   in instructions under valgrind (the count does not drift with the VM's speed, which
   wanders by 10% and more) or, without valgrind, in CPU time.
3. Functions, live: py-spy samples the Gatehouse-on-Redis server under wrk.
4. Concerns: each piece of the edge's work, one call at a time (``bench.concerns``).

Writes ``profile.md`` and ``profile.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.helpers import RedisServer

from bench.capacity import process_cpu_seconds
from bench.load import run_load
from bench.run import GATEHOUSE_APP, GATEHOUSE_ENV, ROOT, SEARCH, Server, command_stats, delta

CONCURRENCY = 32  # requests in flight per round, as wrk's 32 connections
WARMUP_ROUNDS = 50
# --- 2. layers, in process -----------------------------------------------------------


def _edge_chain(app: object) -> list[object]:
    """The edge's layers from the outside in, ending with the FastAPI app.

    Read from the app the factory builds, not from a list kept here: the edge's
    composition changes (attribute ``app`` leads inward, as ASGI layers name it; the
    FastAPI app has none).
    """
    chain = [app]
    while hasattr(chain[-1], "app"):
        chain.append(chain[-1].app)
    return chain


def edge_layers(env: dict[str, str]) -> list[str]:
    """The names of the edge's layers, innermost first, as a worker process sees them."""
    command = [sys.executable, "-m", "bench.profile", "--list-layers"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


class DoNothingLayer:
    """An ASGI layer that only passes the request on: what a layer costs by itself."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class SendWrapperLayer(DoNothingLayer):
    """A layer that wraps ``send`` and adds nothing: the frame of a header-adding layer."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def wrapped(message: Any) -> None:
            await send(message)

        await self.app(scope, receive, wrapped)


def _worker_app(config: str) -> object:
    """The ASGI app a worker drives.

    ``bare``, ``bare+headers``, ``floor`` and ``gatehouse`` (the bench servers of those
    names; ``gatehouse`` is the whole service as its factory builds it);
    ``gatehouse:<layer>``, Gatehouse entered at that layer (``FastAPI``: the app
    without its edge); ``gatehouse-default-gc``, the whole edge with CPython's default
    collector settings instead of Gatehouse's; ``do-nothing-layer`` and
    ``send-wrapper-layer``, Gatehouse's FastAPI app in one layer that does no work.
    """
    if config in APPS:
        module, _, name = APPS[config].partition(":")
        target = getattr(importlib.import_module(module), name)
        return target() if name == "create_app" else target  # a factory, as uvicorn --factory
    from gatehouse.service import create_app

    app = create_app()

    if config in ("do-nothing-layer", "send-wrapper-layer"):
        inner = _edge_chain(app)[-1]
        return DoNothingLayer(inner) if config == "do-nothing-layer" else SendWrapperLayer(inner)
    wanted = config.removeprefix("gatehouse:")
    for layer in _edge_chain(app):
        if type(layer).__name__ == wanted or (wanted == "FastAPI" and not hasattr(layer, "app")):
            return layer
    raise SystemExit(f"no layer {wanted} in the edge")


APPS = {
    "bare": "bench.apps.bare:app",
    "bare+headers": "bench.apps.bare_headers:app",
    "floor": "bench.apps.floor:app",
    "gatehouse": "gatehouse.service:create_app",
    "gatehouse-default-gc": "bench.apps.gatehouse_default_gc:create_app",
}
OTHER_STACKS = ("bare", "bare+headers", "floor")  # served on uvicorn's own protocol
REQUEST = b"GET /search?q=x HTTP/1.1\r\nHost: localhost\r\n\r\n"


class MemoryTransport:
    """Just enough of an asyncio transport for uvicorn's protocol.

    Writes are dropped, but a status line other than 200 is counted: a benchmark must
    not measure refusals by mistake.
    """

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.closing = False
        self.not_ok = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": self.peer}.get(name, default)

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 200 "):
            self.not_ok += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def worker(config: str, rounds: int) -> None:
    """``rounds`` requests on each of 32 connections through uvicorn; print CPU seconds."""
    import uvicorn
    import uvloop
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from gatehouse.server_protocol import LimitedHttpToolsProtocol

    app = _worker_app(config)
    # Gatehouse's configurations on the protocol it serves with (bench.run.GATEHOUSE_PROTOCOL).
    protocol_class = HttpToolsProtocol if config in OTHER_STACKS else LimitedHttpToolsProtocol
    # The flags the benchmark's servers run with (bench.run.Server).
    settings = uvicorn.Config(
        app,  # type: ignore[arg-type]
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
        access_log=False,
        lifespan="off",
        log_level="warning",
    )
    settings.load()
    state = ServerState()

    async def connection(index: int, requests: int) -> None:
        loop = asyncio.get_running_loop()
        protocol = protocol_class(settings, state, {}, _loop=loop)
        transport = MemoryTransport(("127.0.0.1", 40000 + index))
        protocol.connection_made(transport)  # type: ignore[arg-type]
        finished: asyncio.Future[None]
        complete = protocol.on_response_complete

        def on_response_complete() -> None:
            complete()
            finished.set_result(None)

        protocol.on_response_complete = on_response_complete  # type: ignore[method-assign]
        for _ in range(requests):
            finished = loop.create_future()
            protocol.data_received(REQUEST)
            await finished
        protocol.connection_lost(None)
        if transport.not_ok:
            raise SystemExit(f"{config}: {transport.not_ok} answers were not 200")

    async def drive() -> float:
        await asyncio.gather(*(connection(n, WARMUP_ROUNDS) for n in range(CONCURRENCY)))
        started = time.process_time()
        await asyncio.gather(*(connection(n, rounds) for n in range(CONCURRENCY)))
        return time.process_time() - started

    print(f"cpu_seconds={uvloop.run(drive())}")


@dataclass
class LayerRow:
    storage: str
    config: str
    label: str
    per_request: float  # instructions, or CPU microseconds without valgrind
    added: float  # over the row before it


def _run_worker(config: str, rounds: int, env: dict[str, str], valgrind: bool) -> float:
    command = [sys.executable, "-m", "bench.profile", "--worker", config, str(rounds)]
    return run_counted(command, env, valgrind, f"worker {config}")


def run_counted(command: list[str], env: dict[str, str], valgrind: bool, what: str) -> float:
    """Run a worker ``command``: the instructions it ran (valgrind), else the CPU
    seconds it printed (``cpu_seconds=``)."""
    if valgrind:
        command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                   "--cachegrind-out-file=/dev/null", *command]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr.strip()[-500:]}")
    if valgrind:
        match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
        if match is None:
            raise RuntimeError(f"no instruction count from valgrind: {done.stderr[-300:]}")
        return float(match.group(1).replace(",", ""))
    return float(done.stdout.split("cpu_seconds=")[1])


def cost_per_request(config: str, rounds: int, env: dict[str, str], valgrind: bool) -> float:
    """Instructions per request (valgrind), else CPU microseconds per request.

    Under valgrind, the difference between a long and a short run, so start-up and
    imports (most of a run's instructions) cancel out.
    """
    if valgrind:
        short = max(2, rounds // 6)
        long_run = _run_worker(config, rounds, env, True)
        return (long_run - _run_worker(config, short, env, True)) / ((rounds - short) * CONCURRENCY)
    return _run_worker(config, rounds, env, False) / (rounds * CONCURRENCY) * 1e6


def measure_layers(redis_url: str, rounds: int, valgrind: bool) -> list[LayerRow]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    base_env.update(GATEHOUSE_ENV)
    # What the contract costs before any logic: the header fields, then one check.
    plans: list[tuple[str, str, str]] = [
        ("contract", "bare", "bare FastAPI, the same route"),
        ("contract", "bare+headers", "+ the header fields, as constants"),
        ("contract", "floor", "+ one Redis check (the benchmark's floor)"),
        ("memory", "gatehouse:FastAPI", "Gatehouse's FastAPI app, no edge"),
    ]
    layers = edge_layers(base_env)
    plans += [("memory", f"gatehouse:{layer}", f"+ {layer}") for layer in layers]
    plans.append(("redis", "gatehouse:FastAPI", "Gatehouse's FastAPI app, no edge"))
    plans += [("redis", f"gatehouse:{layer}", f"+ {layer}") for layer in layers]
    plans.append(("redis", "gatehouse-default-gc", "the whole edge, CPython's default GC"))
    # What the composition itself costs, each compared with the app alone.
    plans.append(("scaffolding", "gatehouse:FastAPI", "Gatehouse's FastAPI app, no edge"))
    plans.append(("scaffolding", "do-nothing-layer", "+ one layer that only passes it on"))
    plans.append(("scaffolding", "send-wrapper-layer", "+ one layer that only wraps send"))

    def cost(plan: tuple[str, str, str]) -> float:
        storage, config, _label = plan
        env = dict(base_env)
        if storage == "redis":
            env["APP_REDIS_URL"] = redis_url
        env["BENCH_REDIS_URL"] = redis_url  # the floor's own check
        return cost_per_request(config, rounds, env, valgrind)

    # Instruction counts do not depend on what else runs: use every core. CPU time does.
    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) if valgrind else 1) as pool:
        costs = list(pool.map(cost, plans))
    rows: list[LayerRow] = []
    for (storage, config, label), per_request in zip(plans, costs, strict=True):
        # Each row adds to the one before it in its group (the default-GC row: to the
        # whole edge, the row before it too); scaffolding rows, to the app alone.
        group = [row for row in rows if row.storage == storage]
        if not group:
            before = per_request
        elif storage == "scaffolding":
            before = group[0].per_request
        else:
            before = group[-1].per_request
        rows.append(LayerRow(storage, config, label, per_request, per_request - before))
    return rows


# --- 1. server CPU per request ------------------------------------------------------


# What each server adds to: one component per row.
SERVER_REFERENCE = {
    "bare+headers": "bare",  # the header volume
    "floor": "bare+headers",  # one Redis check, nothing else
    "gatehouse-memory": "bare+headers",  # the edge's logic
    "gatehouse-redis": "gatehouse-memory",  # the shared counter instead of the local one
}


@dataclass
class ServerRow:
    server: str
    cpu_us_per_request: float
    rps: float
    scripts_per_request: float | None


def measure_servers(rounds: int, duration: float) -> list[ServerRow]:
    redis = RedisServer()
    redis.start()
    url = redis.url
    servers = [
        Server("bare", "bench.apps.bare:app", {}),
        Server("bare+headers", "bench.apps.bare_headers:app", {}),
        Server("floor", "bench.apps.floor:app", {"BENCH_REDIS_URL": url}, redis),
        Server("gatehouse-memory", GATEHOUSE_APP, dict(GATEHOUSE_ENV)),
        Server("gatehouse-redis", GATEHOUSE_APP, {**GATEHOUSE_ENV, "APP_REDIS_URL": url}, redis),
    ]  # fmt: skip
    samples: dict[str, list[tuple[float, float, float | None]]] = {s.name: [] for s in servers}
    try:
        for server in servers:
            server.start()
        for _ in range(rounds):
            for server in servers:
                assert server.process is not None
                before_cpu = process_cpu_seconds(server.process.pid)
                before_stats = command_stats(server.redis)
                load = run_load("127.0.0.1", server.port, SEARCH, duration=duration)
                cpu = process_cpu_seconds(server.process.pid) - before_cpu
                scripts = None
                if server.redis is not None:
                    scripts = delta(before_stats, command_stats(server.redis))[1] / load.requests
                samples[server.name].append((cpu / load.requests * 1e6, load.rps, scripts))
    finally:
        for server in servers:
            server.stop()
        redis.stop()
    return [
        ServerRow(
            name,
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            statistics.median(s[2] for s in runs) if runs[0][2] is not None else None,
        )
        for name, runs in samples.items()
    ]


# --- 3. functions, live -------------------------------------------------------------


def _frame_name(frame: str) -> str:
    """``send (uvicorn/protocols/http/httptools_impl.py:524)`` -> ``uvicorn/.../httptools_impl.py:send``."""
    match = re.fullmatch(r"(.+?) \((.+?)(?::\d+)?\)", frame.strip())
    if not match:
        return frame.strip() or "<unknown>"
    function, path = match.groups()
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{function}"


def measure_functions(seconds: float) -> dict[str, object]:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if py_spy is None:
        return {"skipped": "py-spy is not installed (uv sync installs it)"}
    redis = RedisServer()
    redis.start()
    server = Server("gatehouse-redis", GATEHOUSE_APP, {**GATEHOUSE_ENV, "APP_REDIS_URL": redis.url})
    raw = Path(tempfile.mkdtemp()) / "samples.txt"
    try:
        server.start()
        assert server.process is not None
        run_load("127.0.0.1", server.port, SEARCH, duration=1.0)  # warm
        sampler = subprocess.Popen(
            [py_spy, "record", "--pid", str(server.process.pid), "--rate", "250",
             "--duration", str(int(seconds)), "--format", "raw", "--nonblocking",
             "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        run_load("127.0.0.1", server.port, SEARCH, duration=seconds + 1)
        _, errors = sampler.communicate(timeout=60)
        if not raw.exists():
            return {"skipped": f"py-spy could not sample: {errors.strip()[-300:]}"}
    finally:
        server.stop()
        redis.stop()

    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():  # a blank line between stacks
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return {
        "samples": total,
        "self": [(name, n / total) for name, n in own.most_common(20)],
        "edge_inclusive": sorted(
            ((name, n / total) for name, n in inclusive.items() if name.startswith("gatehouse/")),
            key=lambda item: -item[1],
        )[:20],
    }


# --- the report ---------------------------------------------------------------------


def write_report(
    servers: list[ServerRow],
    layers: list[LayerRow],
    functions: dict[str, object],
    meta: dict[str, object],
    out: Path,
) -> None:
    unit = "instructions" if meta["valgrind"] else "CPU us"
    lines = ["# Where a request's time goes", ""]
    lines.append(
        f"Machine: {meta['cores']} cores, Python {meta['python']}. `GET /search?q=x`, "
        "a limit that never refuses, so every request pays for a full check."
    )
    if servers:
        bare = next(row for row in servers if row.server == "bare")
        lines += [
            "",
            "## 1. Server CPU per request",
            "",
            f"uvicorn's own CPU (user + kernel) per answered request under wrk, medians of "
            f"{meta['server_rounds']} interleaved rounds. The server saturates its core, so "
            "throughput is about 1 / CPU per request.",
            "",
            "| server | CPU us/request | added us | over | req/s | x bare (CPU) | scripts/request |",
            "|---|---:|---:|---|---:|---:|---:|",
        ]
        cpu = {row.server: row.cpu_us_per_request for row in servers}
        for row in servers:
            scripts = "-" if row.scripts_per_request is None else f"{row.scripts_per_request:.2f}"
            over = SERVER_REFERENCE.get(row.server)
            added = f"{row.cpu_us_per_request - cpu[over]:+.1f}" if over in cpu else "-"
            lines.append(
                f"| {row.server} | {row.cpu_us_per_request:.1f} | {added} | {over or '-'} | "
                f"{row.rps:.0f} | {bare.cpu_us_per_request / row.cpu_us_per_request:.2f} | "
                f"{scripts} |"
            )
        lines += [
            "",
            f"0.70x of bare needs at most {bare.cpu_us_per_request / 0.7:.1f} us per request: "
            f"{bare.cpu_us_per_request / 0.7 - bare.cpu_us_per_request:.1f} us for everything "
            "Gatehouse adds, header volume included.",
        ]
    if layers:
        lines += [
            "",
            "## 2. Layers, in process",
            "",
            f"{unit} per request through the HTTP protocol each server runs (uvicorn's; "
            f"Gatehouse's subclass of it for Gatehouse's rows), {CONCURRENCY} "
            f"keep-alive connections on in-memory transports, each configuration in a "
            f"process of its own ({meta['layer_rounds']} requests a connection"
            + (", counted by valgrind's cachegrind)." if meta["valgrind"] else ", CPU time).")
            + " Parsing, proxy headers and uvicorn's validation and serialisation of every "
            "response field are in these figures; the client sockets and the kernel are "
            "not; Redis's replies are real. The edge is one layer (`Edge`), so its row is "
            "the whole edge; section 4 splits it by concern.",
            "",
            f"| group | configuration | {unit}/request | added |",
            "|---|---|---:|---:|",
        ]
        digits = 0 if meta["valgrind"] else 1
        for layer in layers:
            lines.append(
                f"| {layer.storage} | {layer.label} | {layer.per_request:,.{digits}f} | "
                f"{layer.added:+,.{digits}f} |"
            )
    lines += ["", "## 3. Functions, live (py-spy, Gatehouse on Redis under wrk)", ""]
    if "skipped" in functions:
        lines.append(f"Skipped: {functions['skipped']}")
    else:
        lines += [
            f"{functions['samples']} samples. Async stacks are cut where a coroutine "
            "resumes, so inclusive shares of outer layers are lower bounds.",
            "",
            "| self share | function |",
            "|---:|---|",
        ]
        for name, share in functions["self"]:  # type: ignore[attr-defined]
            lines.append(f"| {share:.1%} | `{name}` |")
        lines += ["", "| inclusive share | Gatehouse function |", "|---:|---|"]
        for name, share in functions["edge_inclusive"]:  # type: ignore[attr-defined]
            lines.append(f"| {share:.1%} | `{name}` |")
    lines.append("")
    (out / "profile.md").write_text("\n".join(lines))
    (out / "profile.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "servers": [asdict(row) for row in servers],
                "layers": [asdict(row) for row in layers],
                "functions": functions,
            },
            indent=2,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "ROUNDS"), help=argparse.SUPPRESS)
    parser.add_argument("--list-layers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--server-rounds", type=int, default=7)
    parser.add_argument("--server-duration", type=float, default=2.0)
    parser.add_argument("--layer-rounds", type=int, default=120)
    parser.add_argument("--live-seconds", type=float, default=8.0)
    parser.add_argument("--sections", default="servers,layers,functions,concerns")
    parser.add_argument("--concern-calls", type=int, default=60_000)
    parser.add_argument(
        "--no-valgrind", action="store_true", help="CPU time even when valgrind is installed"
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    if args.list_layers:
        from gatehouse.service import create_app

        names = [type(layer).__name__ for layer in _edge_chain(create_app())[:-1]]
        print(json.dumps(names[::-1]))
        return 0
    sections = set(args.sections.split(","))
    valgrind = shutil.which("valgrind") is not None and not args.no_valgrind
    args.out.mkdir(parents=True, exist_ok=True)

    servers = (
        measure_servers(args.server_rounds, args.server_duration) if "servers" in sections else []
    )
    layers: list[LayerRow] = []
    if "layers" in sections:
        redis = RedisServer()
        redis.start()
        try:
            layers = measure_layers(redis.url, args.layer_rounds, valgrind)
        finally:
            redis.stop()
    functions: dict[str, object] = (
        measure_functions(args.live_seconds)
        if "functions" in sections
        else {"skipped": "not asked for"}
    )
    meta: dict[str, object] = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "valgrind": valgrind,
        "server_rounds": args.server_rounds,
        "layer_rounds": args.layer_rounds,
    }
    write_report(servers, layers, functions, meta, args.out)
    if "concerns" in sections:
        write_concerns(args.out, valgrind, args.concern_calls)
    print((args.out / "profile.md").read_text())
    return 0


def write_concerns(out: Path, valgrind: bool, calls: int) -> None:
    """Section 4 of the report: the edge's concerns one call at a time (``bench.concerns``)."""
    from bench.concerns import measure_concerns, table

    redis = RedisServer()
    redis.start()
    try:
        rows = measure_concerns(redis.url, valgrind, long=calls, short=max(1, calls // 6))
    finally:
        redis.stop()
    unit = "instructions (valgrind)" if valgrind else "CPU time"
    lines = [
        "",
        "## 4. The edge's concerns, one call at a time",
        "",
        f"Each piece of `Edge.__call__`'s work for an allowed `GET /search` without Origin, "
        f"called {calls:,} times in a process of its own, in {unit} per call "
        "(`python -m bench.concerns`). The Redis check itself is not here: the floor makes "
        "the same one.",
        "",
        *table(rows, valgrind),
        "",
    ]
    report = out / "profile.md"
    report.write_text(report.read_text() + "\n".join(lines))
    data = json.loads((out / "profile.json").read_text())
    data["concerns"] = [asdict(row) for row in rows]
    (out / "profile.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    raise SystemExit(main())
