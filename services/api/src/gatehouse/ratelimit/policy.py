from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from limits import parse_many
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from .headers import DEFAULT_DRAFT, LimitFields, policy_items

RequestKeyFunc = Callable[[Request], str]

# How a route's windows count (README, "Rate-limit algorithms"):
# - fixed: windows aligned to the clock; a client can spend twice the limit across an edge.
# - sliding: an exact trailing window (a log of hits) up to SLIDING_LOG_MAX per window;
#   above it, two fixed counters weighted by overlap, an approximation that costs two numbers.
# - gcra: a smooth rate; "N/P" is a bucket of N units refilled continuously over P.
Algorithm = Literal["fixed", "sliding", "gcra"]
ALGORITHMS: tuple[Algorithm, ...] = ("fixed", "sliding", "gcra")
# A log keeps one Redis list entry (about 10 bytes) per hit in the window: 1,000 hits is
# about 10 kB per client and route at the most. Larger windows use the counters.
SLIDING_LOG_MAX = 1000
SLIDING_LOG, SLIDING_COUNTER = 0, 1  # a sliding window's kind, as the script reads it
# Every product the scripts form (amount x window in ms) stays an exact integer in Lua's
# doubles (2^53), with room for the sums beside it.
MAX_AMOUNT_TIMES_MS = 2**50


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``amount`` units per ``seconds`` (how they are counted: the Algorithm)."""

    amount: int
    seconds: int

    @property
    def milliseconds(self) -> int:
        return self.seconds * 1000

    def divided(self, replicas: int) -> Window:
        """This window's share for one of ``replicas`` pods counting on their own."""
        return Window(max(1, self.amount // replicas), self.seconds)


def parse_windows(rate: str) -> tuple[Window, ...]:
    """``"10/second;100/minute"`` -> one Window per item, via the limits parser."""
    windows = tuple(Window(item.amount, int(item.get_expiry())) for item in parse_many(rate))
    if len(set(windows)) < len(windows):  # one Redis key each: a twin would count twice
        raise ValueError(f"{rate!r} names the same window twice")
    for window in windows:
        if window.amount * window.milliseconds > MAX_AMOUNT_TIMES_MS:
            raise ValueError(f"{rate!r}: {window.amount} per {window.seconds} s is too large")
    return windows


def parse_limit(spec: str) -> tuple[Algorithm | None, tuple[Window, ...]]:
    """``"gcra:10/second"`` -> ("gcra", windows); ``"10/second"`` -> (None, windows).

    The prefix names the algorithm; without one the route's declared algorithm or the
    service's default applies.
    """
    name, colon, rate = spec.partition(":")
    if not colon:
        return None, parse_windows(spec)
    name = name.strip().lower()
    if name not in ALGORITHMS:
        raise ValueError(f"{spec!r}: unknown algorithm {name!r} (one of {', '.join(ALGORITHMS)})")
    return name, parse_windows(rate)


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """The limit that applies to one route template."""

    name: str  # the policy's name in the RateLimit headers
    route: str  # the route template: metrics, and (braces made angle) the Redis key
    windows: tuple[Window, ...]
    cost: int = 1
    # The builder passes the service's default (APP_RATE_LIMIT_ALGORITHM: sliding).
    algorithm: Algorithm = "fixed"
    methods: frozenset[str] | None = None  # None: every method the route answers
    per_method: bool = False
    key_func: RequestKeyFunc | None = None  # None: the stack's client key
    shadow: bool = False  # counted exactly, never refused, no headers: a dry run
    headers_draft: str = DEFAULT_DRAFT  # the RateLimit fields' draft revision
    # Worked out once, so a check only formats what changes per request.
    key_suffixes: tuple[str, ...] = field(init=False)
    # The check script's ARGV: cost, then per window (amount, window in ms), for a
    # sliding window preceded by its kind (SLIDING_LOG or SLIDING_COUNTER).
    script_args: tuple[int, ...] = field(init=False)
    # The response's rate-limit header fields, all but two numbers serialized once.
    header_fields: LimitFields = field(init=False)

    def __post_init__(self) -> None:
        if self.cost < 1:
            raise ValueError(f"{self.route}: a cost is at least 1, not {self.cost}")
        for window in self.windows:
            if self.cost > window.amount:
                raise ValueError(
                    f"{self.route}: a request costs {self.cost}, more than the limit "
                    f"{window.amount} per {window.seconds} s ever admits"
                )
        script_args = [self.cost]
        for window in self.windows:
            if self.algorithm == "sliding":
                script_args.append(sliding_kind(window))
            script_args += [window.amount, window.milliseconds]
        route = self.route.replace("{", "<").replace("}", ">")
        constants = {
            # The algorithm's mark keeps a key's type its own: a route switched from one
            # algorithm to another starts afresh instead of reading another's structure.
            "key_suffixes": tuple(
                f":{route}:{w.amount}/{w.seconds}{key_mark(self.algorithm, w)}"
                for w in self.windows
            ),
            "script_args": tuple(script_args),
            "header_fields": LimitFields(
                policy_items(self.name, [(w.amount, w.seconds) for w in self.windows]),
                self.headers_draft,
            ),
        }
        for attribute, value in constants.items():
            object.__setattr__(self, attribute, value)


def sliding_kind(window: Window) -> int:
    """A sliding window's kind: the exact log while it is small, else the counters."""
    return SLIDING_LOG if window.amount <= SLIDING_LOG_MAX else SLIDING_COUNTER


def key_mark(algorithm: Algorithm, window: Window) -> str:
    """The end of a window's Redis key: none for fixed (the keys it always had)."""
    if algorithm == "fixed":
        return ""
    if algorithm == "gcra":
        return ":gcra"
    return ":log" if sliding_kind(window) == SLIDING_LOG else ":ctr"


class RouteTable:
    """Finds the policy of a request before routing, by the same patterns the router uses.

    Static paths are one dict lookup; templated paths are tried in declaration order.
    A path no route matches gets ``unmatched`` (the default limit), so scanning for
    URLs that do not exist is limited too. A known path with a method it does not
    answer is not counted: the router answers 405 without doing any work.
    """

    def __init__(
        self,
        entries: Iterable[tuple[Route, RoutePolicy | None]],
        unmatched: RoutePolicy | None,
    ) -> None:
        self.static: dict[str, tuple[frozenset[str], RoutePolicy | None]] = {}
        self.templated: list[tuple[re.Pattern[str], frozenset[str], RoutePolicy | None]] = []
        for route, policy in entries:
            methods = frozenset(route.methods or ())
            if route.param_convertors:
                self.templated.append((route.path_regex, methods, policy))
            else:
                self.static.setdefault(route.path, (methods, policy))
        self.unmatched = unmatched

    def policies(self) -> list[RoutePolicy]:
        """Every policy a request can match, the unmatched paths' too."""
        found = [policy for _, policy in self.static.values()]
        found += [policy for _, _, policy in self.templated]
        found.append(self.unmatched)
        return [policy for policy in found if policy is not None]

    def match(self, scope: Scope) -> RoutePolicy | None:
        path: str = scope["path"]
        found = self.static.get(path)
        if found is None:
            for pattern, methods, policy in self.templated:
                if pattern.match(path):
                    found = (methods, policy)
                    break
            else:
                return self.unmatched
        methods, policy = found
        if policy is None or scope["method"] not in methods:
            return None
        if policy.methods is not None and scope["method"] not in policy.methods:
            return None
        return policy


def build_route_table(
    routes: Iterable[BaseRoute],
    limiter: Any,
    default_rate: str,
    default_key_func: RequestKeyFunc,
    overrides: Mapping[str, str] | None = None,
    shadow_routes: Collection[str] = (),
    shadow_all: bool = False,
    default_algorithm: Algorithm = "sliding",
    headers_draft: str = DEFAULT_DRAFT,
) -> RouteTable:
    """Read slowapi's declarations (``@limiter.limit``, ``@limiter.exempt``) per route.

    slowapi keeps them by endpoint name (``module.function``); routes without a
    declaration get ``default_rate``, as slowapi's ``default_limits`` would. Operators
    adjust per environment: ``overrides`` (route template -> rate) replace a route's
    limit, ``shadow_routes`` (templates) or ``shadow_all`` count without refusing.
    ``headers_draft`` is the RateLimit fields' draft revision (``headers.DRAFTS``).
    Each route has its own budget, whichever limit it has.

    A route's algorithm, first found wins: the override's prefix (``"gcra:10/second"``),
    the declaration's (``@limiter.limit("10/second", algorithm="gcra")`` or a prefix
    there), for undeclared routes the default rate's prefix, then ``default_algorithm``.
    """
    overrides = overrides or {}
    if limiter._dynamic_route_limits:
        names = ", ".join(sorted(limiter._dynamic_route_limits))
        raise ValueError(f"limits given as callables are not supported: {names}")
    templates = {route.path for route in routes if isinstance(route, Route)}
    for variable, named in (
        ("APP_RATE_LIMIT_ROUTES", overrides),
        ("APP_RATE_LIMIT_SHADOW_ROUTES", shadow_routes),
    ):
        unknown = sorted(set(named) - templates)
        if unknown:
            raise ValueError(
                f"{variable}: no such route {', '.join(unknown)} (routes: {', '.join(sorted(templates))})"
            )
    declared_algorithms: Mapping[str, Algorithm] = getattr(limiter, "algorithms", {})
    default_prefix, default_windows = parse_limit(default_rate)
    undeclared_algorithm = default_prefix or default_algorithm
    entries: list[tuple[Route, RoutePolicy | None]] = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        endpoint = route.endpoint
        qualified = f"{endpoint.__module__}.{endpoint.__name__}"
        template = route.path
        shadow = shadow_all or template in shadow_routes
        if qualified in limiter._exempt_routes:
            entries.append((route, None))
            continue
        declared = limiter._route_limits.get(qualified) or []
        algorithm = declared_algorithms.get(qualified) or (
            default_algorithm if declared or template in overrides else undeclared_algorithm
        )
        name = endpoint.__name__ if declared or template in overrides else "default"
        if template in overrides:
            prefix, windows = parse_limit(overrides[template])
            algorithm = prefix or algorithm
        elif declared:
            windows = tuple(
                Window(lim.limit.amount, int(lim.limit.get_expiry())) for lim in declared
            )
        else:
            windows = default_windows
        cost, methods, per_method, key_func = 1, None, False, None
        if declared:
            first = declared[0]
            if any(
                lim.cost != first.cost or lim.key_func is not first.key_func for lim in declared
            ):
                raise ValueError(f"{qualified}: all limits of a route must share cost and key")
            if not isinstance(first.cost, int):
                raise ValueError(f"{qualified}: a callable cost is not supported")
            cost = first.cost
            methods = frozenset(m.upper() for m in first.methods) if first.methods else None
            per_method = first.per_method
            key_func = None if first.key_func is default_key_func else first.key_func
        try:
            policy = RoutePolicy(
                name=name,
                route=template,
                windows=windows,
                cost=cost,
                algorithm=algorithm,
                methods=methods,
                per_method=per_method,
                key_func=key_func,
                shadow=shadow,
                headers_draft=headers_draft,
            )
        except ValueError as error:
            if template in overrides:
                raise ValueError(f"APP_RATE_LIMIT_ROUTES: {error}") from None
            raise
        entries.append((route, policy))
    unmatched = RoutePolicy(
        "default", "<unmatched>", default_windows, algorithm=undeclared_algorithm,
        shadow=shadow_all, headers_draft=headers_draft,
    )  # fmt: skip
    return RouteTable(entries, unmatched)
