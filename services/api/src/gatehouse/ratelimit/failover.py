from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

from .errors import StorageError
from .memory import MemoryWindowStore
from .policy import RoutePolicy
from .script import Verdict

FailureMode = Literal["open", "closed"]


class SharedStore(Protocol):
    """The shared counter as FailoverStore uses it: ``redis_store.RedisWindowStore``.

    A protocol, not that class: compiled (``make compiled``), an argument typed with a
    class is checked against it when called, and the unit tests pass a stand-in.
    """

    def call(self, keys: Sequence[str], policy: RoutePolicy) -> Awaitable[Any]: ...
    def verdict(self, reply: Any, started: float) -> Verdict: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class LimitUnavailable(Exception):
    """Mode ``closed`` and Redis is down: the request must be refused (503)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("rate-limit storage unavailable")
        self.retry_after = retry_after


class FailoverStore:
    """The shared Redis while it answers; a declared behaviour while it does not.

    - ``open``: each replica counts on its own with the limit divided by ``replicas``,
      so the deployment as a whole stays near the limit. ``replicas`` starts as the
      estimate (APP_REPLICAS) and follows the peer registry while Redis answers
      (``peers``, through ``use_replicas``); during an outage the last count holds.
    - ``closed``: every limited request is refused with 503 and ``Retry-After``.

    After a failure, Redis is not asked again for ``retry_interval`` seconds (no
    request waits on a dead server's timeout meanwhile); then one request tries it,
    and on success everything is back on the shared count.

    ``clock`` (monotonic) times the retries; ``window_clock`` (the wall clock) is the
    fallback's, which its windows align to. Tests pass their own to step time.
    """

    def __init__(
        self,
        primary: SharedStore | None,
        mode: FailureMode,
        replicas: int,
        retry_interval: float,
        logger: logging.Logger,
        on_error: Callable[[], None] = lambda: None,
        on_fallback: Callable[[bool], None] = lambda active: None,
        clock: Callable[[], float] = time.monotonic,
        window_clock: Callable[[], float] = time.time,
    ) -> None:
        self.primary = primary
        self.fallback = MemoryWindowStore(window_clock)
        self.mode = mode
        self.replicas = replicas
        self.retry_interval = retry_interval
        self.logger = logger
        self.on_error = on_error
        self.on_fallback = on_fallback
        self.clock = clock
        self.down_since: float | None = None
        self.next_attempt = 0.0
        self.probing = False

    def use_replicas(self, count: int) -> None:
        """Divide by ``count`` from now on (never below 1): the peers last learned."""
        self.replicas = max(1, count)

    @property
    def shared(self) -> bool:
        """True while checks go to the shared Redis."""
        return self.primary is not None and self.down_since is None

    async def hit(self, keys: Sequence[str], policy: RoutePolicy) -> Verdict:
        primary = self.primary
        if primary is None:
            return self.fallback.hit_now(keys, policy.windows, policy.cost, policy.algorithm)
        if self.down_since is None:
            started = time.perf_counter()
            try:
                return primary.verdict(await primary.call(keys, policy), started)
            except Exception as error:
                self._mark_down(_storage_error(error))
        elif not self.probing and self.clock() >= self.next_attempt:
            self.probing = True
            started = time.perf_counter()
            try:
                verdict = primary.verdict(await primary.call(keys, policy), started)
            except Exception as error:
                self._mark_down(_storage_error(error))
            else:
                self._mark_up()
                return verdict
            finally:
                self.probing = False
        if self.mode == "closed":
            raise LimitUnavailable(retry_after=max(1, round(self.retry_interval + 0.499)))
        shares = [window.divided(self.replicas) for window in policy.windows]
        return self.fallback.hit_now(keys, shares, policy.cost, policy.algorithm)

    def _mark_down(self, error: StorageError) -> None:
        self.on_error()
        now = self.clock()
        self.next_attempt = now + self.retry_interval
        if self.down_since is None:
            self.down_since = now
            self.on_fallback(True)
            self.logger.error("rate-limit storage unavailable, mode %s: %s", self.mode, error)

    def _mark_up(self) -> None:
        if self.down_since is not None:
            self.logger.warning(
                "rate-limit storage back after %.1f s", self.clock() - self.down_since
            )
        self.down_since = None
        self.on_fallback(False)


def _storage_error(error: Exception) -> StorageError:
    """A failed check as a StorageError: a client bug must not become a 500 on every route."""
    if isinstance(error, StorageError):
        return error
    return StorageError(f"unexpected {type(error).__name__}: {error}")
