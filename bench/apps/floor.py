"""The floor under any edge that honours Gatehouse's contract: headers and one Redis check.

Bare FastAPI (the same route) plus the 11 header fields Gatehouse must add, as
constants, plus one rate-limit check per request through Gatehouse's own pipelined
Redis client (``BENCH_REDIS_URL``), its answer ignored. No other logic: no host or
origin check, no request id, no metrics. What this server loses to bare FastAPI, an
edge in Python with this contract loses before doing anything else.
"""

from __future__ import annotations

import os

from starlette.types import Receive, Scope, Send

from bench.apps.bare import app as bare
from bench.apps.bare_headers import app as bare_with_headers
from gatehouse.ratelimit.pipeline import PipelinedRedis
from gatehouse.ratelimit.redis_store import PipelinedScript
from gatehouse.ratelimit.script import FIXED_SCRIPT

connection = PipelinedRedis.from_url(os.environ["BENCH_REDIS_URL"], None, timeout=0.25)
check = PipelinedScript(connection, FIXED_SCRIPT)
KEYS = ["floor:{ip:127.0.0.1}:/search:1000000/60"]
ARGS = [1, 1_000_000, 60_000]  # cost, then the window: never refuses


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http" or scope["path"] != "/search":
        await bare(scope, receive, send)
        return
    await check(KEYS, ARGS)
    await bare_with_headers(scope, receive, send)
