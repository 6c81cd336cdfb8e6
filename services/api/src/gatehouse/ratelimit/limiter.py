from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Collection
from typing import NamedTuple

from starlette.requests import Request
from starlette.types import Scope

from ..metrics import DecisionCounts
from ..middleware.problem import problem_body
from ..middleware.request_context import LIMITED_ROUTE_KEY
from .failover import FailoverStore, LimitUnavailable
from .identity import IdentityResolver
from .keys import address_key
from .policy import RoutePolicy, RouteTable
from .script import Verdict

# Names the browser may read; the CORS layer exposes them (Access-Control-Expose-Headers).
RATE_LIMIT_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
    "Retry-After",
)

# Where a route's decisions are counted, by route template: "allowed", "denied",
# "unavailable", and "shadow_denied" for a shadow limit that would have refused.
DecisionCountsFor = Callable[[str], DecisionCounts]
MAX_EXEMPT_CACHE = 4096
UNAVAILABLE_BODY = problem_body(
    503, "Service Unavailable", "rate limiting is unavailable; retry later"
)


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
                # A mapped IPv6 address is matched as the IPv4 client it carries.
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                    address = address.ipv4_mapped
                verdict = any(address in network for network in self.networks)
            if len(self.verdicts) < MAX_EXEMPT_CACHE:
                self.verdicts[host] = verdict
        return verdict


def _describe(policy: RoutePolicy) -> str:
    return "; ".join(f"{w.amount} per {w.seconds} s" for w in policy.windows)


def rate_limit_headers(
    policy: RoutePolicy, counts: tuple[int, ...], resets_ms: tuple[int, ...]
) -> list[tuple[bytes, bytes]]:
    """The X-RateLimit-* and IETF RateLimit fields for one check's outcome.

    With several windows they report the one closest to refusal: least remaining,
    then latest reset. Written for the hot path: conditionals rather than ``max``
    (a builtin call costs 15 times a comparison here), and the fixed fields prebuilt
    (``headers.LimitFields``).
    """
    closest = 0
    if len(counts) > 1:
        windows = policy.windows
        closest = min(
            range(len(counts)),
            key=lambda i: (windows[i].amount - counts[i], -resets_ms[i]),
        )
    remaining = policy.windows[closest].amount - counts[closest]
    reset = -(-resets_ms[closest] // 1000)  # whole seconds, rounded up
    return policy.header_fields.fields(closest, remaining, reset)


def refusal_fields(policy: RoutePolicy, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """A 429's fields: ``Retry-After``, whole seconds rounded up, after which the request
    is admitted; the RateLimit fields then report the same wait (drafts -10 and -11:
    Retry-After must not point before ``t``; a sliding window or a bucket empties later
    than it admits again)."""
    retry_after = max(1, -(-verdict.retry_ms // 1000))
    resets_ms = tuple([retry_after * 1000] * len(verdict.counts))
    fields = rate_limit_headers(policy, verdict.counts, resets_ms)
    fields.append((b"retry-after", b"%d" % retry_after))
    return fields


class Refusal(NamedTuple):
    """An answer instead of the route: status, problem body, header fields."""

    status: int
    body: bytes
    fields: list[tuple[bytes, bytes]]


class RateLimiter:
    """Checks the route's limit before the route runs; refuses (429) when it is spent.

    The limit is looked up by route template (``RouteTable``), the client by
    ``client_key``, and counted in ``FailoverStore`` (one Redis call for all the
    route's windows). Allowed responses carry the same headers as refusals:
    ``X-RateLimit-*`` and the IETF ``RateLimit-Policy`` / ``RateLimit`` pair, reporting
    the window closest to refusal.
    """

    def __init__(
        self,
        table: RouteTable,
        store: FailoverStore,
        key_prefix: str = "gatehouse",
        decision_counts: DecisionCountsFor | None = None,
        exempt: ExemptNetworks | None = None,
        logger: logging.Logger | None = None,
        identity: IdentityResolver | None = None,
    ) -> None:
        self.table = table
        self.identity = identity  # who is counted (identity.py); None: the address
        self.exempt = exempt or ExemptNetworks()
        self.store = store
        self.key_head = key_prefix + ":{"
        counts_for = decision_counts or (lambda route: DecisionCounts())
        # Each route's counts, found once per table: a check adds to them directly.
        self.counts = {policy.route: counts_for(policy.route) for policy in table.policies()}
        self.logger = logger or logging.getLogger("gatehouse.ratelimit")

    async def check(
        self, scope: Scope, authorization: bytes | None
    ) -> list[tuple[bytes, bytes]] | Refusal | None:
        """The fields to add to the route's answer, a Refusal, or None (not limited).

        ``authorization`` is the request's first non-empty Authorization (``RequestHead``).
        """
        policy = self.table.match(scope)
        if policy is None:
            return None
        if self.exempt.networks:
            client = scope.get("client")
            if client and client[0] in self.exempt:
                return None

        counts = self.counts[policy.route]
        scope[LIMITED_ROUTE_KEY] = policy.route
        if policy.key_func is not None:
            client_id = policy.key_func(Request(scope))
        elif self.identity is not None:
            client_id = self.identity.key(scope, authorization)
        else:
            client_id = address_key(scope)
        # The client is the hash tag: all of one client's windows live in one Redis
        # Cluster slot, so a check stays one call; different clients spread out.
        base = self.key_head + client_id + "}"
        if policy.per_method:
            base = f"{base}:{scope['method']}"
        suffixes = policy.key_suffixes
        keys = [base + suffixes[0]] if len(suffixes) == 1 else [base + s for s in suffixes]
        try:
            verdict = await self.store.hit(keys, policy)
        except LimitUnavailable as unavailable:
            counts.unavailable += 1
            if policy.shadow:
                return None
            return Refusal(
                503,
                UNAVAILABLE_BODY,
                [(b"retry-after", b"%d" % unavailable.retry_after)],
            )

        if policy.shadow:
            # Counted exactly as if enforced; the client sees nothing of it.
            if verdict.allowed:
                counts.allowed += 1
            else:
                counts.shadow_denied += 1
                self.logger.info(
                    "shadow limit would have refused",
                    extra={
                        "fields": {
                            "route": policy.route,
                            "client": client_id,
                            "limit": _describe(policy),
                        }
                    },
                )
            return None

        if not verdict.allowed:
            counts.denied += 1
            body = problem_body(429, "Too Many Requests", f"limit {_describe(policy)}")
            return Refusal(429, body, refusal_fields(policy, verdict))

        counts.allowed += 1
        return rate_limit_headers(policy, verdict.counts, verdict.resets_ms)
