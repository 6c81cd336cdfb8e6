from __future__ import annotations

import json
import math
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..middleware.request_context import LIMITED_ROUTE_KEY
from .failover import FailoverStore, LimitUnavailable
from .keys import client_key
from .policy import RoutePolicy, RouteTable
from .storage import Verdict

# Names the browser may read; the CORS layer exposes them (Access-Control-Expose-Headers).
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
    "Retry-After",
)
PROBLEM_JSON = (b"content-type", b"application/problem+json")

# Called per decision: (route template, "allowed" | "denied" | "unavailable").
DecisionObserver = Callable[[str, str], None]


def _problem(status: int, title: str, detail: str) -> bytes:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return json.dumps(body, separators=(",", ":")).encode()


class RateLimitMiddleware:
    """Checks the route's limit before the route runs; answers 429 when it is spent.

    The limit is looked up by route template (``RouteTable``), the client by
    ``client_key``, and counted in ``FailoverStore`` (one Redis call for all the
    route's windows). Allowed responses carry the same headers as refusals:
    ``X-RateLimit-*`` and the IETF ``RateLimit-Policy`` / ``RateLimit`` pair, reporting
    the window closest to refusal.
    """

    def __init__(
        self,
        app: ASGIApp,
        table: RouteTable,
        store: FailoverStore,
        key_prefix: str = "gatehouse",
        on_decision: DecisionObserver | None = None,
    ) -> None:
        self.app = app
        self.table = table
        self.store = store
        self.key_prefix = key_prefix
        self.on_decision = on_decision or (lambda route, decision: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.table.match(scope)
        if policy is None:
            await self.app(scope, receive, send)
            return

        scope[LIMITED_ROUTE_KEY] = policy.route
        client = policy.key_func(Request(scope)) if policy.key_func else client_key(scope)
        # The client is the hash tag: all of one client's windows live in one Redis
        # Cluster slot, so a check stays one call; different clients spread out.
        base = f"{self.key_prefix}:{{{client}}}"
        if policy.per_method:
            base = f"{base}:{scope['method']}"
        keys = [base + suffix for suffix in policy.key_suffixes]
        try:
            verdict = await self.store.hit(keys, policy.windows, policy.cost)
        except LimitUnavailable as unavailable:
            self.on_decision(policy.route, "unavailable")
            await self._refuse(
                send,
                503,
                _problem(503, "Service Unavailable", "rate limiting is unavailable; retry later"),
                [(b"retry-after", b"%d" % unavailable.retry_after)],
            )
            return

        headers = self._headers(policy, verdict.counts, verdict.resets_ms)
        if not verdict.allowed:
            self.on_decision(policy.route, "denied")
            headers.append((b"retry-after", b"%d" % self._retry_after(policy, verdict)))
            detail = "; ".join(f"{w.amount} per {w.seconds} s" for w in policy.windows)
            await self._refuse(
                send, 429, _problem(429, "Too Many Requests", f"limit {detail}"), headers
            )
            return

        self.on_decision(policy.route, "allowed")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _headers(
        policy: RoutePolicy, counts: tuple[int, ...], resets_ms: tuple[int, ...]
    ) -> list[tuple[bytes, bytes]]:
        # Report the window closest to refusal: least remaining, then latest reset.
        closest = 0
        if len(counts) > 1:
            windows = policy.windows
            closest = min(
                range(len(counts)),
                key=lambda i: (windows[i].amount - counts[i], -resets_ms[i]),
            )
        remaining = max(0, policy.windows[closest].amount - counts[closest])
        reset = max(0, -(-resets_ms[closest] // 1000))  # whole seconds, rounded up
        return [
            (b"x-ratelimit-limit", policy.limit_values[closest]),
            (b"x-ratelimit-remaining", b"%d" % remaining),
            (b"x-ratelimit-reset", b"%d" % reset),
            (b"ratelimit-policy", policy.policy_header),
            (b"ratelimit", b"%s;r=%d;t=%d" % (policy.item_names[closest], remaining, reset)),
        ]

    @staticmethod
    def _retry_after(policy: RoutePolicy, verdict: Verdict) -> int:
        """Seconds until every window that refused has room again (at least 1)."""
        waits = [
            math.ceil(verdict.resets_ms[index] / 1000)
            for index, window in enumerate(policy.windows)
            if verdict.counts[index] + policy.cost > window.amount
        ]
        return max(1, *waits) if waits else 1

    @staticmethod
    async def _refuse(
        send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [PROBLEM_JSON, (b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
