"""What each of the edge's concerns costs per request, one call at a time, in instructions.

The edge is one layer (``gatehouse.edge``), so the layer-by-layer rows of the profile
no longer say where its cost goes. Here each piece of ``Edge.__call__``'s work for
``GET /search?q=x`` (a limit that allows, no Origin, no body) is called in a loop in a
process of its own, under valgrind: instructions of a long loop minus a short one,
over the calls between them. The Redis check itself is not here (the floor pays the
same); its reply's handling is. Without valgrind, CPU time per call instead.

``python -m bench.concerns`` prints the table; ``make bench-profile`` includes it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.run import GATEHOUSE_ENV

LONG, SHORT = 60_000, 10_000

# name -> what it is, in the order Edge.__call__ does them.
PIECES = {
    "empty-loop": "the measuring loop itself (subtracted from every other row)",
    "request-head": "RequestHead: the one pass over the request's header fields",
    "request-id": "RequestIds.take, decoded, put in scope['state']",
    "cors-fields": "CorsPolicy.cors_fields for a request without Origin",
    "host-check": "HostAllowlist.refuses (a cached verdict)",
    "cross-site": "CrossSitePolicy.refuses for a GET",
    "route-match": "RouteTable.match: the route's limit, before routing",
    "client-key": "address_key: the client's key from its address",
    "coroutine": "one coroutine call that returns at once (RateLimiter.check, FailoverStore.hit)",
    "reply-to-verdict": "RedisWindowStore.verdict: latency observed, the reply as a Verdict",
    "rate-limit-fields": "rate_limit_headers: the five X-RateLimit-*/RateLimit fields",
    "decision-count": "the allowed decision counted (metrics)",
    "security-block": "HeaderBlocks.apply: the JSON block and the edge's fields on a response",
    "request-metrics": "the request observed: route, method, status, duration (metrics)",
}


def _build() -> dict[str, Callable[[], object]]:
    """One callable per piece, on a service built as the benchmark builds it."""
    os.environ.update(GATEHOUSE_ENV)
    from gatehouse.middleware.request_head import RequestHead
    from gatehouse.ratelimit.keys import address_key
    from gatehouse.ratelimit.limiter import rate_limit_headers
    from gatehouse.service import create_app

    edge = create_app()
    concerns = edge.concerns
    route = next(r for r in edge.app.routes if getattr(r, "path", "") == "/search")
    headers = [(b"host", b"localhost")]
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/search",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "route": route,
        "state": {},
    }
    head = RequestHead(headers)
    policy = concerns.limiter.table.match(scope)
    assert policy is not None
    verdict_of = edge.store.primary.verdict if edge.store.primary else None
    response = [(b"content-length", b"26"), (b"content-type", b"application/json")]
    fields = [(b"x-request-id", b"0" * 26), (b"vary", b"Origin")]
    take = edge.request_ids.take
    counts = concerns.limiter.counts["/search"]

    def count_allowed() -> None:  # what RateLimiter.check does for an allowed request
        counts.allowed += 1

    def request_id() -> None:
        scope.setdefault("state", {})["request_id"] = take(None).decode("latin-1")

    async def returns_at_once() -> None:
        return None

    def coroutine() -> None:
        call = returns_at_once()
        try:  # noqa: SIM105  # contextlib.suppress would be measured with it
            call.send(None)
        except StopIteration:
            pass

    def reply_to_verdict() -> object:
        if verdict_of is None:
            raise SystemExit("reply-to-verdict needs APP_REDIS_URL")
        return verdict_of([1, 5, 1000], time.perf_counter())

    return {
        "empty-loop": lambda: None,
        "request-head": lambda: RequestHead(headers),
        "request-id": request_id,
        "cors-fields": lambda: concerns.cors.cors_fields(None, scope),
        "host-check": lambda: concerns.hosts.refuses("/search", b"localhost"),
        "cross-site": lambda: concerns.cross_site.refuses(scope, head),
        "route-match": lambda: concerns.limiter.table.match(scope),
        "client-key": lambda: address_key(scope),
        "coroutine": coroutine,
        "reply-to-verdict": reply_to_verdict,
        "rate-limit-fields": lambda: rate_limit_headers(policy, (5,), (1000,)),
        "decision-count": count_allowed,
        "security-block": lambda: concerns.headers.apply(
            response, concerns.headers.api, "/search", False, fields
        ),
        "request-metrics": lambda: edge.observe(scope, 200, 0.001, "id"),
    }


def worker(piece: str, calls: int) -> None:
    """Call ``piece`` ``calls`` times; print the CPU seconds it took."""
    call = _build()[piece]
    started = time.process_time()
    for _ in range(calls):
        call()
    print(f"cpu_seconds={time.process_time() - started}")


@dataclass
class ConcernRow:
    piece: str
    what: str
    per_call: float  # instructions (valgrind), or CPU nanoseconds
    net: float  # minus the empty loop's


def _run(piece: str, calls: int, env: dict[str, str], valgrind: bool) -> float:
    from bench.profile import run_counted

    command = [sys.executable, "-m", "bench.concerns", "--worker", piece, str(calls)]
    return run_counted(command, env, valgrind, f"concern {piece}")


def measure_concerns(
    redis_url: str, valgrind: bool, long: int = LONG, short: int = SHORT
) -> list[ConcernRow]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    env.update(GATEHOUSE_ENV)
    env["APP_REDIS_URL"] = redis_url
    env["PYTHONHASHSEED"] = "0"  # the same start-up in the long and the short run

    def cost(piece: str) -> float:
        if valgrind:
            return (_run(piece, long, env, True) - _run(piece, short, env, True)) / (long - short)
        return _run(piece, long, env, False) / long * 1e9

    with ThreadPoolExecutor(max_workers=(os.cpu_count() or 1) if valgrind else 1) as pool:
        costs = dict(zip(PIECES, pool.map(cost, PIECES), strict=True))
    loop = costs["empty-loop"]
    return [
        ConcernRow(piece, PIECES[piece], costs[piece], costs[piece] - loop)
        for piece in PIECES
        if piece != "empty-loop"
    ] + [ConcernRow("empty-loop", PIECES["empty-loop"], loop, 0.0)]


def table(rows: list[ConcernRow], valgrind: bool) -> list[str]:
    unit = "instructions" if valgrind else "CPU ns"
    lines = [
        f"| piece | what | {unit}/call | net of the loop |",
        "|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row.piece} | {row.what} | {row.per_call:,.0f} | {row.net:+,.0f} |")
    total = sum(row.net for row in rows if row.piece not in ("empty-loop", "coroutine"))
    lines.append(
        f"| total | every piece once, the coroutine twice | | {total + 2 * next(r.net for r in rows if r.piece == 'coroutine'):+,.0f} |"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shutil

    from tests.helpers import RedisServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("PIECE", "CALLS"), help=argparse.SUPPRESS)
    parser.add_argument("--no-valgrind", action="store_true")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return 0
    valgrind = shutil.which("valgrind") is not None and not args.no_valgrind
    redis = RedisServer()
    redis.start()
    try:
        rows = measure_concerns(redis.url, valgrind)
    finally:
        redis.stop()
    print("\n".join(table(rows, valgrind)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
