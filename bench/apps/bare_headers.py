"""Bare FastAPI plus the response headers Gatehouse sends on a JSON answer, as constants.

It separates what the edge's work costs from what the header volume costs: the same
11 header fields Gatehouse adds to ``GET /search`` over plain http (the JSON security
block, rate limit, ``Vary``, ``X-Request-ID``), each written and parsed on every
response, but no logic behind them.
"""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from bench.apps.bare import app as bare

GATEHOUSE_LIKE_HEADERS = [
    (b"x-ratelimit-limit", b"1000000"),
    (b"x-ratelimit-remaining", b"999999"),
    (b"x-ratelimit-reset", b"42"),
    (b"ratelimit-policy", b'"search";q=1000000;w=60'),
    (b"ratelimit", b'"search";r=999999;t=42'),
    (b"vary", b"Origin"),
    (b"x-request-id", b"0123456789abcdef0000000001"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await bare(scope, receive, send)
        return

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *GATEHOUSE_LIKE_HEADERS]
        await send(message)

    await bare(scope, receive, send_with_headers)
