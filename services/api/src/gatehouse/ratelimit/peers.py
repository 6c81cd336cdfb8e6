"""How many processes share the rate limit, learned through the shared Redis.

In mode ``open`` a process that lost Redis counts on its own with every window
divided by the number of processes (``failover``). That number moves under an HPA,
and a pod has no Kubernetes API token to ask, so each process registers itself in
one sorted set while Redis answers (a heartbeat every ``interval`` seconds) and
reads back how many are registered. When Redis goes away, the last count learned
stays in force: that is when it is needed.

- One round trip per heartbeat: one script registers, drops members silent for
  ``TTL_HEARTBEATS`` heartbeats and counts, with scores from Redis's clock (``TIME``),
  so pods with skewed clocks agree on who is silent.
- A process is one member (a random id per registry): each uvicorn worker counts
  on its own when Redis is down, so each is a peer.
- The key, ``gatehouse.peers``, shares the limiter's prefix but not its namespace:
  every ``gatehouse:*`` key is a counter, and tools (and tests) read them as such.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable

from .redis_store import ScriptCall

PEERS_KEY = "gatehouse.peers"
# A member not seen for this many heartbeats has stopped (or lost Redis).
TTL_HEARTBEATS = 3

# KEYS: the set. ARGV: the member, the TTL in ms, 1 to register or 0 to leave.
# Returns how many members are left. The set expires with its last member's TTL,
# so a deployment that is gone leaves nothing behind.
PEERS_SCRIPT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl_ms = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl_ms)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - ttl_ms)
return redis.call('ZCARD', KEYS[1])
"""

REGISTER = 1
LEAVE = 0


class PeerRegistry:
    """This process's membership in the peer set, and the count it believes.

    ``count`` starts at ``estimate`` (APP_REPLICAS) and follows the heartbeats' answers.
    A rise is believed at once; a drop only when two heartbeats in a row report it
    (the larger of the two is taken). A Redis that restarted empty, or that was out
    of reach of every pod, answers 1 to the first pod back: its peers re-register
    within one interval, so the next answer is whole again. Believing too many peers
    only makes the fallback stricter; believing too few lets the deployment admit a
    multiple of its limit.

    ``on_count`` hears every change of ``count``; ``on_error`` every failed heartbeat.
    Nothing here raises into a caller: a heartbeat that fails is counted and logged.
    """

    def __init__(
        self,
        call: ScriptCall,
        interval: float,
        estimate: int,
        logger: logging.Logger,
        on_count: Callable[[int], None] = lambda count: None,
        on_error: Callable[[], None] = lambda: None,
        key: str = PEERS_KEY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the heartbeat interval must be positive, not {interval}")
        self.call = call
        self.interval = interval
        self.ttl_ms = max(1, round(interval * TTL_HEARTBEATS * 1000))
        self.count = max(1, estimate)
        self.logger = logger
        self.on_count = on_count
        self.on_error = on_error
        self.key = key
        self.sleep = sleep
        # Redis keeps integers as their decimal text: a random 63-bit id is a member.
        self.member = secrets.randbits(63)
        self.drop_seen: int | None = None  # a lower count reported once, not yet believed
        self.failing = False

    async def run(self) -> None:
        """Heartbeat until cancelled (a background job for the app's lifetime)."""
        while True:
            await self.heartbeat()
            await self.sleep(self.interval)

    async def heartbeat(self) -> bool:
        """Register once and learn the count; False when Redis did not answer."""
        try:
            reply = await self.call([self.key], (self.member, self.ttl_ms, REGISTER))
            registered = int(reply)
        except Exception as error:  # whatever the client raises: a background job must go on
            self.on_error()
            # A drop must be reported twice in a row, with no outage in between.
            self.drop_seen = None
            if not self.failing:
                self.failing = True
                self.logger.warning(
                    "peer heartbeat failed, keeping %d peers: %s: %s",
                    self.count,
                    type(error).__name__,
                    error,
                )
            return False
        if self.failing:
            self.failing = False
            self.logger.info("peer heartbeat answered again: %d registered", registered)
        self._learn(registered)
        return True

    async def leave(self) -> None:
        """Deregister at shutdown, so the others need not wait out the TTL."""
        try:
            await self.call([self.key], (self.member, self.ttl_ms, LEAVE))
        except Exception as error:  # Redis down at shutdown: the TTL removes us instead
            self.logger.info("peer registry not told of this shutdown: %s", error)

    def _learn(self, registered: int) -> None:
        reported = max(1, registered)
        if reported >= self.count:
            self.drop_seen = None
            self._believe(reported)
        elif self.drop_seen is None:
            self.drop_seen = reported
        else:
            believed = max(reported, self.drop_seen)
            self.drop_seen = None
            self._believe(believed)

    def _believe(self, count: int) -> None:
        if count == self.count:
            return
        self.logger.info("rate-limit peers: %d (was %d)", count, self.count)
        self.count = count
        self.on_count(count)
