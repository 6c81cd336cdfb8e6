"""The peer stack: what a team would assemble instead of Gatehouse, from the usual parts.

FastAPI with Starlette's ``CORSMiddleware`` (Gatehouse's allowlist, methods and
headers), the ``secure`` package's ASGI middleware for the security headers (set to
the JSON block the floor sends), and the limit ``1000000/minute`` per client address
as a FastAPI dependency over ``limits``' async Redis storage (``limits.aio``, redis-py
underneath: one script call per check), in its own Redis (``BENCH_REDIS_URL``). The
route is bare FastAPI's own handler, so the validation and the work are the same.

Why ``limits`` and not ``fastapi-limiter``: fastapi-limiter 0.2 is built on
pyrate-limiter, whose Redis bucket keeps one sorted-set member per request (a million
a minute per client at this limit), and its default key trusts the leftmost
``X-Forwarded-For`` entry, which the client writes. Neither is what a team would ship.
No rate-limit response headers and no request id: the parts do not offer them, so
this stack does less per response than Gatehouse and the floor do.
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from secure import CacheControl, ContentSecurityPolicy, Secure, XContentTypeOptions, XFrameOptions
from secure.middleware import SecureASGIMiddleware

from bench.apps import bare

LIMIT = parse(os.environ.get("BENCH_LIMIT", "1000000/minute"))
storage = RedisStorage(
    "async+" + os.environ["BENCH_REDIS_URL"], implementation="redispy", key_prefix="peer"
)
limiter = FixedWindowRateLimiter(storage)


async def rate_limit(request: Request) -> None:
    client = request.client.host if request.client else "unknown"
    if not await limiter.hit(LIMIT, client, "/search"):
        raise HTTPException(429, "rate limit exceeded")


app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
app.get("/search", dependencies=[Depends(rate_limit)])(bare.search)
app.get("/readyz")(bare.readyz)
app.add_middleware(
    CORSMiddleware,
    allow_origins=["http://localhost:5173"],
    allow_credentials=True,
    allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    allow_headers=["Authorization", "Content-Type"],
    max_age=600,
)
# Added last, so outermost: preflights and errors carry the headers too.
app.add_middleware(
    SecureASGIMiddleware,
    secure=Secure(
        xcto=XContentTypeOptions().nosniff(),
        xfo=XFrameOptions().deny(),
        cache=CacheControl().no_store(),
        csp=ContentSecurityPolicy().default_src("'none'").frame_ancestors("'none'"),
    ),
)
