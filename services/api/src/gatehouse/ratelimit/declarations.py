"""slowapi as the language routes declare their limits in, without its per-call wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from slowapi import Limiter

from .policy import Algorithm, parse_limit

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
Rate = str | Callable[..., str]


class DeclaringLimiter(Limiter):
    """A slowapi ``Limiter`` that records what routes declare and leaves them as written.

    ``@limiter.limit``, ``@limiter.shared_limit`` and ``@limiter.exempt`` are slowapi's own:
    the same parsing, the same bookkeeping by ``module.function`` name that
    ``build_route_table`` reads, the same error for a route without a ``request``
    parameter. Only the function they return differs: the route itself. The edge
    (``RateLimiter``, through the edge) enforces the declarations, so the limiter is always
    disabled (its own check calls Redis synchronously on the event loop), and
    slowapi's wrapper would only pass each call on: one more coroutine per request
    (its cost: ``make bench-profile``, bench/results/profile.md).
    """

    def __init__(self, key_func: Callable[..., str], default_limit: str) -> None:
        _, default_rate = self._split(default_limit, None)
        super().__init__(key_func=key_func, default_limits=[default_rate], enabled=False)
        # slowapi's constructor lets RATELIMIT_ENABLED in the environment (or a .env file)
        # override ``enabled``; nothing outside Settings decides how the service limits.
        self.enabled = False
        # Each declared route's algorithm by ``module.function``, as slowapi keeps limits.
        self.algorithms: dict[str, Algorithm] = {}

    def limit(  # slowapi's, and one keyword more
        self, limit_value: Rate, *args: Any, algorithm: Algorithm | None = None, **kwargs: Any
    ) -> Callable[[Endpoint], Endpoint]:
        """slowapi's ``limit``, with the algorithm as a keyword or a prefix of the rate
        (``"gcra:10/second"``); without either, the service's default applies."""
        algorithm, rate = self._split(limit_value, algorithm)
        return self._recorded(super().limit(rate, *args, **kwargs), algorithm)

    def shared_limit(  # slowapi's, and one keyword more
        self, limit_value: Rate, *args: Any, algorithm: Algorithm | None = None, **kwargs: Any
    ) -> Callable[[Endpoint], Endpoint]:
        algorithm, rate = self._split(limit_value, algorithm)
        return self._recorded(super().shared_limit(rate, *args, **kwargs), algorithm)

    @staticmethod
    def _split(limit_value: Rate, algorithm: Algorithm | None) -> tuple[Algorithm | None, Rate]:
        if not isinstance(limit_value, str):  # a callable: refused by build_route_table
            return algorithm, limit_value
        prefix, _ = parse_limit(limit_value)  # a bad algorithm or rate fails at declaration
        if prefix is not None and algorithm is not None and prefix != algorithm:
            raise ValueError(f"{limit_value!r} names {prefix}, the keyword {algorithm}")
        rate = limit_value.partition(":")[2] if prefix else limit_value
        return prefix or algorithm, rate

    def _recorded(
        self, record: Callable[[Endpoint], object], algorithm: Algorithm | None
    ) -> Callable[[Endpoint], Endpoint]:
        def declare(endpoint: Endpoint) -> Endpoint:
            record(endpoint)  # slowapi notes the declaration; its wrapper is dropped
            if algorithm is not None:
                self.algorithms[f"{endpoint.__module__}.{endpoint.__name__}"] = algorithm
            return endpoint

        return declare

    def exempt(self, obj: Endpoint) -> Endpoint:
        super().exempt(obj)  # type: ignore[no-untyped-call]  # slowapi leaves it unannotated
        return obj
