from __future__ import annotations

import ipaddress
import json
import logging
import math
from collections.abc import Callable, Collection

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

# Called per decision: (route template, "allowed" | "denied" | "unavailable" |
# "shadow_denied", the last for a shadow limit that would have refused).
DecisionObserver = Callable[[str, str], None]
MAX_EXEMPT_CACHE = 4096


class ExemptNetworks:
    """Client networks that are never limited (``APP_RATE_LIMIT_EXEMPT_CIDRS``).

    Matched on the client IP uvicorn resolved from trusted proxies, never the raw peer,
    so only the ingress can vouch for an exempt address.
    """

    def __init__(self, networks: Collection[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(network) for network in networks)
        self.verdicts: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str) -> bool:
        verdict = self.verdicts.get(host)
        if verdict is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                verdict = False
            else:
                verdict = any(address in network for network in self.networks)
            if len(self.verdicts) < MAX_EXEMPT_CACHE:
                self.verdicts[host] = verdict
        return verdict


def _describe(policy: RoutePolicy) -> str:
    return "; ".join(f"{w.amount} per {w.seconds} s" for w in policy.windows)


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
        exempt: ExemptNetworks | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.app = app
        self.table = table
        self.exempt = exempt or ExemptNetworks()
        self.store = store
        self.key_prefix = key_prefix
        self.on_decision = on_decision or (lambda route, decision: None)
        self.logger = logger or logging.getLogger("gatehouse.ratelimit")

    def replace_policy(self, table: RouteTable, exempt: ExemptNetworks) -> None:
        """A reloaded policy: both swapped between two requests, never half."""
        self.table, self.exempt = table, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.table.match(scope)
        if policy is None:
            await self.app(scope, receive, send)
            return
        if self.exempt:
            client = scope.get("client")
            if client and client[0] in self.exempt:
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
            if policy.shadow:
                await self.app(scope, receive, send)
                return
            await self._refuse(
                send,
                503,
                _problem(503, "Service Unavailable", "rate limiting is unavailable; retry later"),
                [(b"retry-after", b"%d" % unavailable.retry_after)],
            )
            return

        if policy.shadow:
            # Counted exactly as if enforced; the client sees nothing of it.
            if verdict.allowed:
                self.on_decision(policy.route, "allowed")
            else:
                self.on_decision(policy.route, "shadow_denied")
                self.logger.info(
                    "shadow limit would have refused",
                    extra={
                        "fields": {
                            "route": policy.route,
                            "client": client,
                            "limit": _describe(policy),
                        }
                    },
                )
            await self.app(scope, receive, send)
            return

        headers = self._headers(policy, verdict.counts, verdict.resets_ms)
        if not verdict.allowed:
            self.on_decision(policy.route, "denied")
            headers.append((b"retry-after", b"%d" % self._retry_after(policy, verdict)))
            body = _problem(429, "Too Many Requests", f"limit {_describe(policy)}")
            await self._refuse(send, 429, body, headers)
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
