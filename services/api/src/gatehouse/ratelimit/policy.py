from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from limits import parse_many
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from .headers import DEFAULT_DRAFT, LimitFields, policy_items

RequestKeyFunc = Callable[[Request], str]


@dataclass(frozen=True, slots=True)
class Window:
    """A fixed window: at most ``amount`` hits per ``seconds``, aligned to the clock."""

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
    return tuple(Window(item.amount, int(item.get_expiry())) for item in parse_many(rate))


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """The limit that applies to one route template."""

    name: str  # the policy's name in the RateLimit headers
    route: str  # the route template: metrics, and (braces made angle) the Redis key
    windows: tuple[Window, ...]
    cost: int = 1
    methods: frozenset[str] | None = None  # None: every method the route answers
    per_method: bool = False
    key_func: RequestKeyFunc | None = None  # None: the stack's client key
    shadow: bool = False  # counted exactly, never refused, no headers: a dry run
    headers_draft: str = DEFAULT_DRAFT  # the RateLimit fields' draft revision
    # Worked out once, so a check only formats what changes per request.
    key_suffixes: tuple[str, ...] = field(init=False)
    # The check script's ARGV: cost, then (amount, window in ms) per window.
    script_args: tuple[int, ...] = field(init=False)
    # The response's rate-limit header fields, all but two numbers serialized once.
    header_fields: LimitFields = field(init=False)

    def __post_init__(self) -> None:
        script_args = [self.cost]
        for window in self.windows:
            script_args += [window.amount, window.milliseconds]
        constants = {
            "key_suffixes": tuple(
                f":{self.route.replace('{', '<').replace('}', '>')}:{w.amount}/{w.seconds}"
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
    headers_draft: str = DEFAULT_DRAFT,
) -> RouteTable:
    """Read slowapi's declarations (``@limiter.limit``, ``@limiter.exempt``) per route.

    slowapi keeps them by endpoint name (``module.function``); routes without a
    declaration get ``default_rate``, as slowapi's ``default_limits`` would. Operators
    adjust per environment: ``overrides`` (route template -> rate) replace a route's
    limit, ``shadow_routes`` (templates) or ``shadow_all`` count without refusing.
    ``headers_draft`` is the RateLimit fields' draft revision (``headers.DRAFTS``).
    Each route has its own budget, whichever limit it has.
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
    default_windows = parse_windows(default_rate)
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
        if template in overrides:
            windows = parse_windows(overrides[template])
        elif declared:
            windows = tuple(
                Window(lim.limit.amount, int(lim.limit.get_expiry())) for lim in declared
            )
        else:
            entries.append(
                (
                    route,
                    RoutePolicy(
                        "default",
                        template,
                        default_windows,
                        shadow=shadow,
                        headers_draft=headers_draft,
                    ),
                )
            )
            continue
        if not declared:
            entries.append(
                (
                    route,
                    RoutePolicy(
                        endpoint.__name__,
                        template,
                        windows,
                        shadow=shadow,
                        headers_draft=headers_draft,
                    ),
                )
            )
            continue
        first = declared[0]
        if any(lim.cost != first.cost or lim.key_func is not first.key_func for lim in declared):
            raise ValueError(f"{qualified}: all limits of a route must share cost and key")
        if not isinstance(first.cost, int):
            raise ValueError(f"{qualified}: a callable cost is not supported")
        key_func = None if first.key_func is default_key_func else first.key_func
        entries.append(
            (
                route,
                RoutePolicy(
                    name=endpoint.__name__,
                    route=template,
                    windows=windows,
                    cost=first.cost,
                    methods=frozenset(m.upper() for m in first.methods) if first.methods else None,
                    per_method=first.per_method,
                    key_func=key_func,
                    shadow=shadow,
                    headers_draft=headers_draft,
                ),
            )
        )
    unmatched = RoutePolicy(
        "default", "<unmatched>", default_windows, shadow=shadow_all, headers_draft=headers_draft
    )
    return RouteTable(entries, unmatched)
