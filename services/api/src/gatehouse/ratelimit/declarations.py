"""slowapi as the language routes declare their limits in, without its per-call wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from slowapi import Limiter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


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
        super().__init__(key_func=key_func, default_limits=[default_limit], enabled=False)
        # slowapi's constructor lets RATELIMIT_ENABLED in the environment (or a .env file)
        # override ``enabled``; nothing outside Settings decides how the service limits.
        self.enabled = False

    def limit(self, *args: Any, **kwargs: Any) -> Callable[[Endpoint], Endpoint]:
        return _recorded(super().limit(*args, **kwargs))

    def shared_limit(self, *args: Any, **kwargs: Any) -> Callable[[Endpoint], Endpoint]:
        return _recorded(super().shared_limit(*args, **kwargs))

    def exempt(self, obj: Endpoint) -> Endpoint:
        super().exempt(obj)  # type: ignore[no-untyped-call]  # slowapi leaves it unannotated
        return obj


def _recorded(record: Callable[[Endpoint], object]) -> Callable[[Endpoint], Endpoint]:
    def declare(endpoint: Endpoint) -> Endpoint:
        record(endpoint)  # slowapi notes the declaration; its wrapper is dropped
        return endpoint

    return declare
