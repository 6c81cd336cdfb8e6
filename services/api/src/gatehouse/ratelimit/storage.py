from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple, Protocol

from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from .errors import StorageError
from .pipeline import PipelinedRedis, PipelinedScript
from .policy import RoutePolicy, Window

# One call checks every window of a limit, all or nothing, and reports each window's
# count and time to reset, so the response headers need no second round trip.
# The windows are fixed and aligned to Redis's clock (TIME), so replicas with skewed
# clocks still share one window; a key expires when its window ends.
# KEYS: one per window. ARGV: cost, then (amount, window in ms) per window.
# Returns: {allowed (1/0), count_1, reset_ms_1, count_2, reset_ms_2, ...}
CHECK_SCRIPT = """
if #KEYS == 1 then
  -- One window (the common case): count first, undo a refusal. Two commands instead
  -- of four, and the same answer: a refused request leaves the count as it was.
  local cost = tonumber(ARGV[1])
  local count = redis.call('INCRBY', KEYS[1], cost)
  local reset_ms
  if count == cost then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    local window_ms = tonumber(ARGV[3])
    reset_ms = window_ms - (now_ms % window_ms)
    redis.call('PEXPIRE', KEYS[1], reset_ms)
  else
    reset_ms = redis.call('PTTL', KEYS[1])
    if reset_ms < 0 then  -- a key that lost its expiry must not block for ever
      reset_ms = tonumber(ARGV[3])
      redis.call('PEXPIRE', KEYS[1], reset_ms)
    end
  end
  if count > tonumber(ARGV[2]) then
    redis.call('DECRBY', KEYS[1], cost)
    return {0, count - cost, reset_ms}
  end
  return {1, count, reset_ms}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local cost = tonumber(ARGV[1])
local counts = {}
local allowed = 1
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] + cost > tonumber(ARGV[2 * i]) then allowed = 0 end
end
local reply = {allowed}
for i = 1, #KEYS do
  local window_ms = tonumber(ARGV[2 * i + 1])
  local reset_ms = -1
  if allowed == 1 then
    counts[i] = redis.call('INCRBY', KEYS[i], cost)
    if counts[i] == cost then
      reset_ms = window_ms - (now_ms % window_ms)
      redis.call('PEXPIRE', KEYS[i], reset_ms)
    end
  end
  if reset_ms < 0 then
    reset_ms = redis.call('PTTL', KEYS[i])
    if reset_ms < 0 then reset_ms = window_ms - (now_ms % window_ms) end
  end
  reply[2 * i] = counts[i]
  reply[2 * i + 1] = reset_ms
end
return reply
"""


class Verdict(NamedTuple):
    """The outcome of one check: allowed or not, and per window (count, ms to reset)."""

    allowed: bool
    counts: tuple[int, ...]
    resets_ms: tuple[int, ...]


def verdict(allowed: bool, counts: tuple[int, ...], resets_ms: tuple[int, ...]) -> Verdict:
    """``Verdict(...)`` without the Python-level ``__new__`` a NamedTuple generates.

    That constructor measured 5,200 instructions a call, more than the rest of a
    memory-store check; the tuple built directly is the same object.
    """
    return tuple.__new__(Verdict, (allowed, counts, resets_ms))


class ScriptRunner(Protocol):
    """Runs the check script on some Redis client; the awaitable raises StorageError."""

    def run(self, keys: Sequence[str], args: Sequence[int]) -> Awaitable[Any]: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class PipelinedRunner:
    """The hot path for one Redis endpoint (``redis://``, ``rediss://``): see ``pipeline``."""

    def __init__(self, connection: PipelinedRedis) -> None:
        self.connection = connection
        # ``run`` is the script itself: a check gets the reply's future, whose errors
        # are StorageErrors already, with no call in between.
        self.run = PipelinedScript(connection, CHECK_SCRIPT)

    async def ping(self) -> bool:
        try:
            return bool(await self.connection.execute("PING"))
        except StorageError:
            return False

    async def close(self) -> None:
        await self.connection.close()


class RedisPyRunner:
    """Any topology the ``limits`` library connects to (Sentinel, Cluster, ...), via redis-py."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self.sha = hashlib.sha1(CHECK_SCRIPT.encode(), usedforsecurity=False).hexdigest()
        # Until one call has succeeded, calls go one at a time (see ``run``).
        self.warm = False
        self.first_call = asyncio.Lock()

    @classmethod
    def from_url(
        cls, url: str, password: str | None, timeout: float, ca_file: str | None = None
    ) -> RedisPyRunner:
        """The client ``limits`` builds for ``url``, with fail-fast options for its kind.

        Credentials in the URL reach every node (and, for Sentinel, the sentinels too,
        as ``limits`` does); ``password`` (APP_REDIS_PASSWORD) reaches the data nodes.
        """
        scheme = url.split("://", 1)[0]
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        if scheme == "redis+cluster":
            # RedisCluster takes no per-connection ``retry_on_timeout``; its ``retry``
            # counts whole attempts (reconnect and re-read the slot map). One more
            # attempt lets a request ride over a node that just moved, within the
            # timeout below; MOVED, ASK and TRYAGAIN are followed whatever this says.
            options["retry"] = Retry(NoBackoff(), 1)
            # By default redis-py closes every connection after five MOVED replies,
            # in-flight commands included; those fail after Redis ran them and the
            # retry above runs them again: a hit counted twice (seen while resharding
            # under load). Each MOVED updates its own slot instead.
            options["reinitialize_steps"] = 0
        else:
            # Fail fast: the failure mode decides what to do; retries would only
            # multiply the time a request waits on a dead Redis.
            options["retry"] = Retry(NoBackoff(), 0)
        if scheme == "redis+sentinel":
            # Without this, ``limits`` hands the sentinels no socket timeouts at all:
            # one silent sentinel would hold every reconnect past the timeout.
            sentinel_options: dict[str, Any] = {
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            }
            options["sentinel_kwargs"] = sentinel_options
        if password:
            options["password"] = password
        if ca_file:
            options["ssl_ca_certs"] = ca_file
        storage = storage_from_string(f"async+{url}", implementation="redispy", **options)
        bridge = getattr(storage, "bridge", None)
        if not isinstance(storage, RedisStorage) or not isinstance(bridge, RedispyBridge):
            raise ValueError(f"{scheme} is not a Redis storage")  # pragma: no cover
        return cls(bridge.get_connection(), timeout)

    async def run(self, keys: Sequence[str], args: Sequence[int]) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                if not self.warm:
                    # A cold client (no slot map, no connections) met by a burst:
                    # every waiting check would discover the topology and open
                    # connections at once. Measured on a cold cluster client under
                    # three replicas' burst: redis-py failed checks on transports it
                    # had closed under them. One call warms it; the rest follow.
                    async with self.first_call:
                        if not self.warm:
                            reply = await self._call(keys, args)
                            self.warm = True
                            return reply
                return await self._call(keys, args)
        except (RedisError, OSError, TimeoutError) as error:
            raise StorageError(f"{type(error).__name__}: {error}") from error

    async def _call(self, keys: Sequence[str], args: Sequence[int]) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A node that never saw the script (a fresh primary, one promoted after a
            # failover: Redis 7 does not replicate the script cache). EVAL runs it on
            # that node and caches it there. redis-py's own Script would SCRIPT LOAD
            # on every primary for every waiting check at once: measured on a fresh
            # cluster, a burst of 180 checks then opened connections faster than the
            # timeout allowed and ten of them failed.
            return await self.client.eval(CHECK_SCRIPT, len(keys), *keys, *args)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        await self.client.aclose()


def connect_runner(
    url: str, password: str | None, timeout: float, client: str = "auto", ca_file: str | None = None
) -> ScriptRunner:
    """The pipelined connection for one endpoint; redis-py for Sentinel and Cluster."""
    single_endpoint = url.startswith(("redis://", "rediss://"))
    if client == "pipelined" or (client == "auto" and single_endpoint):
        if not single_endpoint:
            raise ValueError("the pipelined client speaks to one endpoint (redis:// or rediss://)")
        return PipelinedRunner(PipelinedRedis.from_url(url, password, timeout, ca_file))
    return RedisPyRunner.from_url(url, password, timeout, ca_file)


class RedisWindowStore:
    """Counters in the shared Redis (or Valkey): one script call per check."""

    def __init__(
        self, runner: ScriptRunner, observe_latency: Callable[[float], None] | None = None
    ) -> None:
        self.runner = runner
        self.observe_latency = observe_latency

    async def hit(self, keys: Sequence[str], policy: RoutePolicy) -> Verdict:
        started = time.perf_counter()
        try:
            reply = await self.runner.run(keys, policy.script_args)
        except StorageError:
            raise
        except Exception as error:  # a client bug must not become a 500 on every route
            raise StorageError(f"unexpected {type(error).__name__}: {error}") from error
        if self.observe_latency is not None:
            self.observe_latency(time.perf_counter() - started)
        if len(reply) == 3:  # one window
            return verdict(reply[0] == 1, (reply[1],), (reply[2],))
        return verdict(reply[0] == 1, tuple(reply[1::2]), tuple(reply[2::2]))

    async def ping(self) -> bool:
        return await self.runner.ping()

    async def close(self) -> None:
        await self.runner.close()


NO_COUNT = (0, 0)  # a key never seen: no hits, a window that already ended


class MemoryWindowStore:
    """The same windows and semantics as the script, in this process only.

    Used when no Redis is configured (one replica, development) and as the fallback
    while Redis is down. Nothing here awaits, so a check is atomic on the event loop.
    """

    SWEEP_EVERY = 10_000  # new keys between sweeps of expired ones

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self.counters: dict[str, tuple[int, int]] = {}  # key -> (count, window end in ms)
        self.new_keys = 0

    def hit_now(self, keys: Sequence[str], windows: Sequence[Window], cost: int) -> Verdict:
        now_ms = int(self.clock() * 1000)
        if len(keys) == 1:
            return self._hit_one(keys[0], windows[0], cost, now_ms)
        counters = self.counters
        counts: list[int] = []
        ends: list[int] = []
        allowed = True
        for key, window in zip(keys, windows, strict=True):
            count, ends_ms = counters.get(key, NO_COUNT)
            if ends_ms <= now_ms:
                span_ms = window.milliseconds
                count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
            counts.append(count)
            ends.append(ends_ms)
            if count + cost > window.amount:
                allowed = False
        if allowed:
            for index, key in enumerate(keys):
                if key not in counters:
                    self._note_new_key(now_ms)
                    counters = self.counters  # a sweep makes a new dict
                counts[index] += cost
                counters[key] = (counts[index], ends[index])
        return verdict(allowed, tuple(counts), tuple([end - now_ms for end in ends]))

    def _hit_one(self, key: str, window: Window, cost: int, now_ms: int) -> Verdict:
        """``hit_now`` for one window (most limits): the same rules, without the loops."""
        count, ends_ms = self.counters.get(key, NO_COUNT)
        if ends_ms <= now_ms:
            span_ms = window.milliseconds
            count, ends_ms = 0, now_ms - now_ms % span_ms + span_ms
        if count + cost > window.amount:
            return verdict(False, (count,), (ends_ms - now_ms,))
        if key not in self.counters:
            self._note_new_key(now_ms)
        count += cost
        self.counters[key] = (count, ends_ms)
        return verdict(True, (count,), (ends_ms - now_ms,))

    def _note_new_key(self, now_ms: int) -> None:
        self.new_keys += 1
        if self.new_keys >= self.SWEEP_EVERY:
            self.new_keys = 0
            self.counters = {k: v for k, v in self.counters.items() if v[1] > now_ms}
