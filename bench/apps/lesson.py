"""The lesson's stack, written the way the lesson writes it.

CORSMiddleware, TrustedHostMiddleware, security headers in ``@app.middleware("http")``
and slowapi's decorator with its own storage: ``BENCH_STORAGE_URI`` (``memory://`` or
``redis://...``) and ``BENCH_LIMIT``.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address

LIMIT = os.environ.get("BENCH_LIMIT", "1000000/minute")

limiter = Limiter(
    key_func=get_remote_address,
    storage_uri=os.environ.get("BENCH_STORAGE_URI", "memory://"),
    headers_enabled=True,
)
app = FastAPI()
app.state.limiter = limiter
app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
app.add_middleware(
    CORSMiddleware,
    allow_origins=["http://localhost:5173"],
    allow_credentials=True,
    allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    allow_headers=["Authorization", "Content-Type"],
)
app.add_middleware(TrustedHostMiddleware, allowed_hosts=["localhost", "127.0.0.1"])


@app.middleware("http")
async def security_headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    return response


@app.get("/search")
@limiter.limit(LIMIT)
async def search(request: Request, response: Response, q: str) -> dict[str, Any]:
    return {"query": q, "results": []}


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}
